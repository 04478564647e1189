//! Tensors: strided views over borrowed memory, and an owned aligned tensor.
//!
//! Views carry raw pointers because their memory comes from outside Rust (numpy, torch, mmap'd
//! files); the lifetime `'a` ties each view to whatever keeps that memory alive. Strides are in
//! elements, as in torch.
use std::marker::PhantomData;

use crate::{DType, Element, Error, Result};

fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![0isize; shape.len()];
    let mut acc = 1isize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc *= d.max(1) as isize;
    }
    strides
}

fn is_contiguous(shape: &[usize], strides: &[isize]) -> bool {
    let mut expected = 1isize;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected *= d as isize;
    }
    true
}

/// A read-only strided view.
#[derive(Clone, Debug)]
pub struct TensorRef<'a> {
    ptr: *const u8,
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<isize>,
    _marker: PhantomData<&'a [u8]>,
}

// SAFETY: a TensorRef is a shared borrow of plain numbers.
unsafe impl Send for TensorRef<'_> {}
unsafe impl Sync for TensorRef<'_> {}

impl<'a> TensorRef<'a> {
    /// # Safety
    /// `ptr` must be valid for reads of every element addressed by `shape` and `strides` (in
    /// elements of `dtype`) for the lifetime `'a`, and suitably aligned for `dtype`.
    pub unsafe fn from_raw(ptr: *const u8, dtype: DType, shape: Vec<usize>, strides: Vec<isize>) -> Self {
        assert_eq!(shape.len(), strides.len());
        TensorRef { ptr, dtype, shape, strides, _marker: PhantomData }
    }

    /// A contiguous view of a slice; errors if the shape does not hold exactly `data.len()` elements.
    pub fn from_slice<T: Element>(data: &'a [T], shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::value("data", format!("{} elements do not fill shape {:?}", data.len(), shape)));
        }
        Ok(TensorRef {
            ptr: data.as_ptr() as *const u8,
            dtype: T::DTYPE,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            _marker: PhantomData,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[isize] {
        &self.strides
    }
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_contiguous(&self) -> bool {
        is_contiguous(&self.shape, &self.strides)
    }
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The elements as a slice when the view is contiguous and of type `T`.
    pub fn as_slice<T: Element>(&self) -> Option<&'a [T]> {
        if T::DTYPE != self.dtype || !self.is_contiguous() {
            return None;
        }
        let n = self.numel();
        if n == 0 {
            return Some(&[]);
        }
        // SAFETY: contiguity and dtype were checked; validity is the constructor's contract.
        Some(unsafe { std::slice::from_raw_parts(self.ptr as *const T, n) })
    }

    /// The sub-view at `index` along the first axis.
    pub fn index0(&self, index: usize) -> TensorRef<'a> {
        assert!(index < self.shape[0], "index {index} out of range for axis of {}", self.shape[0]);
        let offset = index as isize * self.strides[0] * self.dtype.size() as isize;
        TensorRef {
            // SAFETY: index is in range, so the offset stays inside the viewed memory.
            ptr: unsafe { self.ptr.offset(offset) },
            dtype: self.dtype,
            shape: self.shape[1..].to_vec(),
            strides: self.strides[1..].to_vec(),
            _marker: PhantomData,
        }
    }

    /// The rows `[start, start + len)` along the first axis, as a view.
    pub fn narrow0(&self, start: usize, len: usize) -> TensorRef<'a> {
        assert!(start + len <= self.shape[0], "rows {start}..{} out of range for {}", start + len, self.shape[0]);
        let offset = start as isize * self.strides[0] * self.dtype.size() as isize;
        let mut shape = self.shape.clone();
        shape[0] = len;
        TensorRef {
            // SAFETY: the range is checked, so the offset stays inside the viewed memory.
            ptr: unsafe { self.ptr.offset(offset) },
            dtype: self.dtype,
            shape,
            strides: self.strides.clone(),
            _marker: PhantomData,
        }
    }

    /// Copies the elements, in row-major order, into a contiguous owned tensor.
    pub fn to_contiguous(&self) -> Tensor {
        let mut out = Tensor::zeros(self.dtype, &self.shape);
        let esize = self.dtype.size();
        let dst = out.bytes_mut();
        let mut idx = vec![0usize; self.ndim()];
        for chunk in dst.chunks_exact_mut(esize.max(1)).take(self.numel()) {
            let off: isize = idx.iter().zip(&self.strides).map(|(&i, &s)| i as isize * s).sum();
            // SAFETY: idx is inside shape, so the element is inside the viewed memory.
            let src = unsafe { std::slice::from_raw_parts(self.ptr.offset(off * esize as isize), esize) };
            chunk.copy_from_slice(src);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    }

    /// Checks the dtype is one of `allowed`, naming the argument otherwise.
    pub fn expect_dtype(&self, arg: &str, allowed: &[DType]) -> Result<()> {
        if allowed.contains(&self.dtype) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
        Err(Error::dtype(arg, names.join(" or "), self.dtype))
    }

    /// Checks the shape against `expected`, where `None` accepts any size on that axis.
    pub fn expect_shape(&self, arg: &str, expected: &[Option<usize>], names: &str) -> Result<()> {
        let ok = self.shape.len() == expected.len() && self.shape.iter().zip(expected).all(|(&a, e)| e.map_or(true, |e| e == a));
        if ok {
            Ok(())
        } else {
            let dims: Vec<String> = expected.iter().map(|e| e.map_or("*".to_string(), |v| v.to_string())).collect();
            Err(Error::shape(arg, format!("{names} = ({})", dims.join(", ")), &self.shape))
        }
    }
}

/// A writable strided view.
#[derive(Debug)]
pub struct TensorMut<'a> {
    ptr: *mut u8,
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<isize>,
    _marker: PhantomData<&'a mut [u8]>,
}

// SAFETY: a TensorMut is an exclusive borrow of plain numbers.
unsafe impl Send for TensorMut<'_> {}
unsafe impl Sync for TensorMut<'_> {}

impl<'a> TensorMut<'a> {
    /// # Safety
    /// As [`TensorRef::from_raw`], for writes, and no other live reference may alias the memory.
    pub unsafe fn from_raw(ptr: *mut u8, dtype: DType, shape: Vec<usize>, strides: Vec<isize>) -> Self {
        assert_eq!(shape.len(), strides.len());
        TensorMut { ptr, dtype, shape, strides, _marker: PhantomData }
    }

    pub fn from_slice<T: Element>(data: &'a mut [T], shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::value("out", format!("{} elements do not fill shape {:?}", data.len(), shape)));
        }
        Ok(TensorMut {
            ptr: data.as_mut_ptr() as *mut u8,
            dtype: T::DTYPE,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            _marker: PhantomData,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_contiguous(&self) -> bool {
        is_contiguous(&self.shape, &self.strides)
    }
    pub fn as_ref(&self) -> TensorRef<'_> {
        TensorRef { ptr: self.ptr, dtype: self.dtype, shape: self.shape.clone(), strides: self.strides.clone(), _marker: PhantomData }
    }

    pub fn as_mut_slice<T: Element>(&mut self) -> Option<&mut [T]> {
        if T::DTYPE != self.dtype || !self.is_contiguous() {
            return None;
        }
        let n = self.numel();
        if n == 0 {
            return Some(&mut []);
        }
        // SAFETY: contiguity and dtype were checked; exclusivity is the constructor's contract.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut T, n) })
    }
}

/// 64-byte aligned storage unit, so SIMD loads of owned tensors never straddle cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// An owned, contiguous, 64-byte aligned tensor.
#[derive(Clone)]
pub struct Tensor {
    lines: Vec<Line>,
    dtype: DType,
    shape: Vec<usize>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor").field("dtype", &self.dtype).field("shape", &self.shape).finish()
    }
}

impl Tensor {
    pub fn zeros(dtype: DType, shape: &[usize]) -> Self {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        Tensor { lines: vec![Line([0; 64]); bytes.div_ceil(64)], dtype, shape: shape.to_vec() }
    }

    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::value("data", format!("{} elements do not fill shape {:?}", data.len(), shape)));
        }
        let mut t = Tensor::zeros(T::DTYPE, shape);
        t.as_mut_slice::<T>().copy_from_slice(&data);
        Ok(t)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: lines hold at least nbytes bytes of initialised memory.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.nbytes()) }
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let n = self.nbytes();
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u8, n) }
    }

    /// The elements as `T`; panics on a dtype mismatch, which is a bug in the caller.
    pub fn as_slice<T: Element>(&self) -> &[T] {
        assert_eq!(T::DTYPE, self.dtype, "tensor holds {}, not {}", self.dtype, T::DTYPE);
        // SAFETY: 64-byte alignment satisfies every element type; length matches numel.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const T, self.numel()) }
    }
    pub fn as_mut_slice<T: Element>(&mut self) -> &mut [T] {
        assert_eq!(T::DTYPE, self.dtype, "tensor holds {}, not {}", self.dtype, T::DTYPE);
        let n = self.numel();
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut T, n) }
    }

    pub fn view(&self) -> TensorRef<'_> {
        // SAFETY: the buffer is contiguous and lives as long as the borrow.
        unsafe { TensorRef::from_raw(self.lines.as_ptr() as *const u8, self.dtype, self.shape.clone(), contiguous_strides(&self.shape)) }
    }
    pub fn view_mut(&mut self) -> TensorMut<'_> {
        let strides = contiguous_strides(&self.shape);
        // SAFETY: the buffer is contiguous and exclusively borrowed.
        unsafe { TensorMut::from_raw(self.lines.as_mut_ptr() as *mut u8, self.dtype, self.shape.clone(), strides) }
    }

    /// Raw pointer to the data, for handing the buffer to Python without a copy.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr() as *mut u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_view_copies_in_row_major_order() {
        let data: Vec<f32> = (0..6).map(|v| v as f32).collect();
        // data as [2, 3]; view it transposed as [3, 2].
        let t = unsafe { TensorRef::from_raw(data.as_ptr() as *const u8, DType::F32, vec![3, 2], vec![1, 3]) };
        assert!(!t.is_contiguous());
        let c = t.to_contiguous();
        assert_eq!(c.as_slice::<f32>(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn size_one_axes_do_not_break_contiguity() {
        let data = [1.0f32; 4];
        let t = unsafe { TensorRef::from_raw(data.as_ptr() as *const u8, DType::F32, vec![1, 4], vec![99, 1]) };
        assert!(t.is_contiguous());
    }

    #[test]
    fn shape_errors_name_the_argument() {
        let data = [0f32; 6];
        let t = TensorRef::from_slice(&data, &[2, 3]).unwrap();
        let err = t.expect_shape("router_weight", &[Some(4), Some(3)], "(E, H)").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("router_weight") && msg.contains("(4, 3)") && msg.contains("[2, 3]"), "{msg}");
    }
}
