//! The DLPack ABI (dlpack.h): importing a producer's capsule (torch tensors) with [`import`],
//! and exporting Rust-owned buffers with [`NativeTensor`], which numpy and torch adopt through
//! `from_dlpack` without a copy (legacy capsules, or versioned 1.0 when the consumer asks).
use std::any::Any;
use std::ffi::{c_void, CStr};
use std::ptr::NonNull;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use rio_core::{DType, Element};

use crate::arrays::{contiguous_strides, dangling};

// The DLPack ABI (dlpack.h, v0.8 "legacy" capsules), as torch and numpy exchange it.
const DL_CPU: i32 = 1;
const DL_CUDA: i32 = 2;
const DL_INT: u8 = 0;
const DL_UINT: u8 = 1;
const DL_FLOAT: u8 = 2;
const DL_BFLOAT: u8 = 4;
const DL_BOOL: u8 = 6;
const DLTENSOR: &CStr = c"dltensor";
const USED_DLTENSOR: &CStr = c"used_dltensor";
const DLTENSOR_VERSIONED: &CStr = c"dltensor_versioned";

#[repr(C)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_context: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// DLPack 1.x: the same tensor plus a version and flags (no READ_ONLY flag: consumers may write).
#[repr(C)]
struct DLManagedTensorVersioned {
    version: [u32; 2],
    manager_context: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

fn dl_dtype(t: &DLDataType) -> Result<DType, String> {
    Ok(match (t.code, t.bits, t.lanes) {
        (DL_FLOAT, 32, 1) => DType::F32,
        (DL_FLOAT, 16, 1) => DType::F16,
        (DL_BFLOAT, 16, 1) => DType::BF16,
        (DL_INT, 32, 1) => DType::I32,
        (DL_INT, 64, 1) => DType::I64,
        (DL_FLOAT, b, 1) => return Err(format!("float{b}")),
        (DL_INT, b, 1) => return Err(format!("int{b}")),
        (DL_UINT, b, 1) => return Err(format!("uint{b}")),
        (DL_BOOL, _, 1) => return Err("bool".into()),
        (c, b, l) => return Err(format!("DLPack type code {c}, {b} bits, {l} lanes")),
    })
}

fn dl_code(dtype: DType) -> DLDataType {
    let (code, bits) = match dtype {
        DType::F32 => (DL_FLOAT, 32),
        DType::F16 => (DL_FLOAT, 16),
        DType::BF16 => (DL_BFLOAT, 16),
        DType::I32 => (DL_INT, 32),
        DType::I64 => (DL_INT, 64),
    };
    DLDataType { code, bits, lanes: 1 }
}

/// A tensor received through a consumed `"dltensor"` capsule; runs the producer's deleter on drop.
pub(crate) struct Imported {
    managed: NonNull<DLManagedTensor>,
}

impl Drop for Imported {
    fn drop(&mut self) {
        // SAFETY: we renamed the capsule to "used_dltensor", so its deleter is ours to call, once.
        unsafe {
            if let Some(deleter) = self.managed.as_ref().deleter {
                deleter(self.managed.as_ptr());
            }
        }
    }
}

/// What an imported CPU tensor holds: its dtype (or the name of an unsupported one), shape,
/// strides in elements, and the address of its first element.
pub(crate) struct ImportedView {
    pub(crate) owner: Imported,
    pub(crate) dtype: Result<DType, String>,
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<isize>,
    pub(crate) ptr: *mut u8,
}

/// Takes `obj.__dlpack__()` (torch tensors; gradients detached, which shares memory) and checks
/// it lives on the CPU. Errors name `arg`.
pub(crate) fn import(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<ImportedView> {
    import_from(obj, arg, None)
}

/// [`import`] for a CUDA tensor (DLPack device type kDLCUDA): `__dlpack__(stream=stream)` makes
/// the producer order its pending work before `stream` (torch's current stream when the caller
/// passes it), so the kernels we launch there see the data.
pub(crate) fn import_cuda(obj: &Bound<'_, PyAny>, arg: &str, stream: u64) -> PyResult<ImportedView> {
    import_from(obj, arg, Some(stream))
}

fn import_from(obj: &Bound<'_, PyAny>, arg: &str, cuda_stream: Option<u64>) -> PyResult<ImportedView> {
    // torch refuses to export tensors that track gradients; detaching is free and shares memory.
    let obj = match obj.getattr("requires_grad") {
        Ok(flag) if flag.is_truthy()? => obj.call_method0("detach")?,
        _ => obj.clone(),
    };
    let capsule = match cuda_stream {
        // DLPack: stream 1 is the legacy default stream; 0 is not allowed for CUDA.
        Some(stream) => {
            let kwargs = pyo3::types::PyDict::new(obj.py());
            kwargs.set_item("stream", if stream == 0 { 1 } else { stream })?;
            obj.call_method("__dlpack__", (), Some(&kwargs))
        }
        None => obj.call_method0("__dlpack__"),
    };
    let capsule = capsule
        .map_err(|e| PyValueError::new_err(format!("{arg}: expected a CPU tensor that DLPack can share, but __dlpack__ failed: {e}")))?;
    let raw = capsule.as_ptr();
    // SAFETY: plain capsule queries on a live object.
    let managed = unsafe {
        if pyo3::ffi::PyCapsule_IsValid(raw, DLTENSOR.as_ptr()) != 1 {
            return Err(PyTypeError::new_err(format!("{arg}: __dlpack__ did not return a \"dltensor\" capsule")));
        }
        let m = pyo3::ffi::PyCapsule_GetPointer(raw, DLTENSOR.as_ptr()) as *mut DLManagedTensor;
        if pyo3::ffi::PyCapsule_SetName(raw, USED_DLTENSOR.as_ptr()) != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        NonNull::new(m).ok_or_else(|| PyValueError::new_err(format!("{arg}: empty DLPack capsule")))?
    };
    let owner = Imported { managed };
    // SAFETY: the producer keeps the DLTensor valid until its deleter runs (when `owner` drops).
    let t = unsafe { &managed.as_ref().dl_tensor };
    if cuda_stream.is_some() && t.device.device_type != DL_CUDA {
        return Err(PyValueError::new_err(format!(
            "{arg}: expected a CUDA tensor, got DLPack device type {} (move it with .cuda())",
            t.device.device_type
        )));
    }
    if cuda_stream.is_none() && t.device.device_type != DL_CPU {
        return Err(PyValueError::new_err(format!(
            "{arg}: expected a CPU tensor, got DLPack device type {} (move it with .cpu())",
            t.device.device_type
        )));
    }
    let ndim = t.ndim.max(0) as usize;
    // SAFETY: DLPack guarantees `ndim` entries in shape, and in strides when not null.
    let shape: Vec<usize> =
        if ndim == 0 { vec![] } else { unsafe { std::slice::from_raw_parts(t.shape, ndim) }.iter().map(|&d| d.max(0) as usize).collect() };
    let strides: Vec<isize> = if t.strides.is_null() || ndim == 0 {
        contiguous_strides(&shape)
    } else {
        unsafe { std::slice::from_raw_parts(t.strides, ndim) }.iter().map(|&s| s as isize).collect()
    };
    if t.data.is_null() && shape.iter().product::<usize>() != 0 {
        return Err(PyValueError::new_err(format!("{arg}: null data pointer")));
    }
    // byte_offset is inside the producer's allocation by the DLPack contract.
    let ptr = (t.data as *mut u8).wrapping_add(t.byte_offset as usize);
    Ok(ImportedView { owner, dtype: dl_dtype(&t.dtype), shape, strides, ptr })
}

/// A Rust-owned contiguous buffer that numpy and torch can adopt through DLPack without a copy.
#[pyclass(module = "rio_rt._rio_rt", frozen)]
pub(crate) struct NativeTensor {
    storage: std::sync::Arc<dyn Any + Send + Sync>,
    ptr: usize,
    dtype: DType,
    shape: Vec<usize>,
}

impl NativeTensor {
    /// Takes ownership of `data`, viewed as `shape`.
    pub(crate) fn from_vec<T: Element>(mut data: Vec<T>, shape: &[usize]) -> NativeTensor {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "shape must hold the data exactly");
        let ptr = if data.is_empty() { dangling() as usize } else { data.as_mut_ptr() as usize };
        NativeTensor { storage: std::sync::Arc::new(data), ptr, dtype: T::DTYPE, shape: shape.to_vec() }
    }
}

/// What a DLPack capsule we export points at (legacy or versioned); freed by its deleter.
struct Export {
    legacy: DLManagedTensor,
    versioned: DLManagedTensorVersioned,
    _storage: std::sync::Arc<dyn Any + Send + Sync>,
    _shape: Vec<i64>,
}

unsafe extern "C" fn export_deleter(m: *mut DLManagedTensor) {
    // SAFETY: manager_context is the Box<Export> leaked in `__dlpack__`; DLPack calls this once.
    drop(unsafe { Box::from_raw((*m).manager_context as *mut Export) });
}

unsafe extern "C" fn export_deleter_versioned(m: *mut DLManagedTensorVersioned) {
    // SAFETY: as `export_deleter`.
    drop(unsafe { Box::from_raw((*m).manager_context as *mut Export) });
}

/// Frees an export nobody consumed: a capsule still carrying its original name.
unsafe extern "C" fn capsule_destructor(capsule: *mut pyo3::ffi::PyObject) {
    // SAFETY: a capsule still named "dltensor[_versioned]" was never consumed, so its deleter is ours to run.
    unsafe {
        if pyo3::ffi::PyCapsule_IsValid(capsule, DLTENSOR.as_ptr()) == 1 {
            let m = pyo3::ffi::PyCapsule_GetPointer(capsule, DLTENSOR.as_ptr()) as *mut DLManagedTensor;
            if let Some(deleter) = (*m).deleter {
                deleter(m);
            }
        } else if pyo3::ffi::PyCapsule_IsValid(capsule, DLTENSOR_VERSIONED.as_ptr()) == 1 {
            let m = pyo3::ffi::PyCapsule_GetPointer(capsule, DLTENSOR_VERSIONED.as_ptr()) as *mut DLManagedTensorVersioned;
            if let Some(deleter) = (*m).deleter {
                deleter(m);
            }
        }
    }
}

#[pymethods]
impl NativeTensor {
    /// Exports the buffer (shared with this object, writable) as a DLPack capsule: versioned
    /// (1.0) when the consumer asks for `max_version >= (1, 0)`, legacy otherwise.
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<Bound<'py, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = (stream, dl_device);
        if copy == Some(true) {
            return Err(PyValueError::new_err("copy: NativeTensor exports its own buffer; copy=True is not supported"));
        }
        let mut shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let dl_tensor = || DLTensor {
            data: self.ptr as *mut c_void,
            device: DLDevice { device_type: DL_CPU, device_id: 0 },
            ndim: self.shape.len() as i32,
            dtype: dl_code(self.dtype),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        };
        let shape_ptr = shape.as_mut_ptr();
        let export = Box::leak(Box::new(Export {
            legacy: DLManagedTensor { dl_tensor: dl_tensor(), manager_context: std::ptr::null_mut(), deleter: Some(export_deleter) },
            versioned: DLManagedTensorVersioned {
                version: [1, 0],
                manager_context: std::ptr::null_mut(),
                deleter: Some(export_deleter_versioned),
                flags: 0,
                dl_tensor: dl_tensor(),
            },
            _storage: self.storage.clone(),
            _shape: shape,
        }));
        let context = export as *mut Export as *mut c_void;
        export.legacy.manager_context = context;
        export.versioned.manager_context = context;
        export.legacy.dl_tensor.shape = shape_ptr;
        export.versioned.dl_tensor.shape = shape_ptr;
        let versioned = max_version.is_some_and(|(major, _)| major >= 1);
        // SAFETY: the capsule owns the export until a consumer renames it; the destructor frees it otherwise.
        unsafe {
            let (ptr, name) = if versioned {
                (&mut export.versioned as *mut DLManagedTensorVersioned as *mut c_void, DLTENSOR_VERSIONED)
            } else {
                (&mut export.legacy as *mut DLManagedTensor as *mut c_void, DLTENSOR)
            };
            let capsule = pyo3::ffi::PyCapsule_New(ptr, name.as_ptr(), Some(capsule_destructor));
            if capsule.is_null() {
                drop(Box::from_raw(context as *mut Export));
            }
            Bound::from_owned_ptr_or_err(py, capsule)
        }
    }

    fn __dlpack_device__(&self) -> (i32, i32) {
        (DL_CPU, 0)
    }

    /// Address of the first element (lets tests check results share this buffer).
    fn data_ptr(&self) -> usize {
        self.ptr
    }

    #[getter]
    fn shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    #[getter]
    fn dtype(&self) -> &'static str {
        self.dtype.name()
    }
}
