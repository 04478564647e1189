//! Device buffers and the views the backend computes on: a tensor view may point to device memory
//! (used in place) or host memory (copied to a stream-ordered device buffer).
use cudarc::driver::{result, sys};
use rio_core::{bf16, f16, DType, Error, Result, Tensor, TensorRef};

use crate::device::driver_error;

/// A stream-ordered device allocation, freed on the same stream when dropped.
pub(crate) struct DeviceBuf {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    stream: sys::CUstream,
}

impl DeviceBuf {
    pub fn alloc(bytes: usize, stream: sys::CUstream) -> Result<Self> {
        // SAFETY: a plain stream-ordered allocation (at least 256 bytes, so empty tensors work).
        let ptr =
            unsafe { result::malloc_async(stream, bytes.max(256)) }.map_err(|e| driver_error(&format!("allocating {bytes} bytes"), e))?;
        Ok(DeviceBuf { ptr, bytes, stream })
    }

    pub fn zeroed(bytes: usize, stream: sys::CUstream) -> Result<Self> {
        let b = Self::alloc(bytes, stream)?;
        // SAFETY: b owns at least `bytes` bytes.
        unsafe { result::memset_d8_async(b.ptr, 0, bytes, stream) }.map_err(|e| driver_error("cuMemsetD8Async", e))?;
        Ok(b)
    }

    pub fn from_slice<T: Copy>(data: &[T], stream: sys::CUstream) -> Result<Self> {
        let b = Self::alloc(std::mem::size_of_val(data), stream)?;
        if !data.is_empty() {
            // SAFETY: b holds size_of_val(data) bytes; pageable sources are staged before return.
            unsafe { result::memcpy_htod_async(b.ptr, data, stream) }.map_err(|e| driver_error("cuMemcpyHtoDAsync", e))?;
        }
        Ok(b)
    }

    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Copies the buffer back after finishing the stream's work.
    pub fn to_vec<T: Copy + Default>(&self) -> Result<Vec<T>> {
        let mut v = vec![T::default(); self.bytes / std::mem::size_of::<T>()];
        copy_to_host(self.ptr, &mut v, self.stream)?;
        Ok(v)
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        // SAFETY: ptr came from malloc_async on this stream; a failure here leaks, nothing worse.
        let _ = unsafe { result::free_async(self.ptr, self.stream) };
    }
}

/// Synchronises `stream`, then copies `dst.len()` elements from device address `src`.
pub(crate) fn copy_to_host<T: Copy>(src: u64, dst: &mut [T], stream: sys::CUstream) -> Result<()> {
    // SAFETY: the stream's pending writes to src finish first; dst is exclusively borrowed.
    unsafe { result::stream::synchronize(stream) }.map_err(|e| driver_error("cuStreamSynchronize", e))?;
    if !dst.is_empty() {
        unsafe { result::memcpy_dtoh_sync(dst, src) }.map_err(|e| driver_error("cuMemcpyDtoH", e))?;
    }
    Ok(())
}

/// Whether `ptr` is device memory (cudaMalloc, torch CUDA tensors) rather than host memory.
pub(crate) fn is_device_pointer(ptr: *const u8) -> bool {
    let mut kind: u32 = 0;
    // SAFETY: the driver only inspects the address; unknown (plain host) memory is an error code.
    let r = unsafe {
        sys::cuPointerGetAttribute(
            &mut kind as *mut u32 as *mut std::ffi::c_void,
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            ptr as sys::CUdeviceptr,
        )
    };
    r == sys::CUresult::CUDA_SUCCESS && kind == sys::CUmemorytype::CU_MEMORYTYPE_DEVICE as u32
}

/// A row-major matrix on the device: `rows x cols`, row stride `ld` elements, inner stride 1.
pub(crate) struct Mat {
    pub ptr: u64,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
    pub dtype: DType,
    _owned: Option<DeviceBuf>,
}

impl Mat {
    /// A view of a contiguous device buffer owned elsewhere.
    pub fn device(ptr: u64, rows: usize, cols: usize, dtype: DType) -> Mat {
        Mat { ptr, rows, cols, ld: cols, dtype, _owned: None }
    }

    /// The bytes of this matrix's address and row stride allow 16-byte vector loads.
    pub fn aligned16(&self) -> bool {
        let per = 16 / self.dtype.size();
        self.ptr.is_multiple_of(16) && (self.ld.is_multiple_of(per) || self.rows <= 1) && self.cols.is_multiple_of(per)
    }
}

fn host_elements_as(t: &Tensor, to: DType) -> Vec<u8> {
    let values: Vec<f32> = match t.dtype() {
        DType::F32 => t.as_slice::<f32>().to_vec(),
        DType::BF16 => t.as_slice::<bf16>().iter().map(|v| v.to_f32()).collect(),
        DType::F16 => t.as_slice::<f16>().iter().map(|v| v.to_f32()).collect(),
        DType::I32 => t.as_slice::<i32>().iter().map(|&v| v as f32).collect(),
        DType::I64 => t.as_slice::<i64>().iter().map(|&v| v as f32).collect(),
    };
    match to {
        DType::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    }
}

/// `t` (1-D `[cols]` or 2-D `[rows, cols]`) as a device matrix of dtype `dtype`. Host views are
/// copied (and converted); device views are used in place and must already be of `dtype` with
/// contiguous rows.
pub(crate) fn device_mat(t: &TensorRef<'_>, arg: &str, dtype: DType, stream: sys::CUstream) -> Result<Mat> {
    let (rows, cols, ld) = match *t.shape() {
        [c] => (1, c, c),
        [r, c] => (r, c, t.strides()[0].max(0) as usize),
        _ => return Err(Error::shape(arg, "(rows, cols)", t.shape())),
    };
    if is_device_pointer(t.as_ptr()) {
        if t.dtype() != dtype {
            return Err(Error::dtype(arg, format!("{} (CUDA tensors are not converted)", dtype.name()), t.dtype()));
        }
        let inner = *t.strides().last().unwrap_or(&1);
        if cols > 1 && inner != 1 {
            return Err(Error::value(arg, "CUDA tensors need contiguous rows (inner stride 1)"));
        }
        return Ok(Mat { ptr: t.as_ptr() as u64, rows, cols, ld: if rows <= 1 { cols } else { ld }, dtype, _owned: None });
    }
    let host = t.to_contiguous();
    let bytes = if host.dtype() == dtype { host.bytes().to_vec() } else { host_elements_as(&host, dtype) };
    let buf = DeviceBuf::from_slice(&bytes, stream)?;
    Ok(Mat { ptr: buf.ptr(), rows, cols, ld: cols, dtype, _owned: Some(buf) })
}
