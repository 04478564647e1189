//! `out = x · wᵀ`: the one matrix product every linear layer and expert needs.
//!
//! `x [M, K]` holds activations (one row per token), `w [N, K]` weights in checkpoint (out, in)
//! order, `out [M, N]` fp32. Kernels accumulate in fp32 whatever the input dtypes.
//! [`reference::matmul_nt`] is the plain twin every kernel is tested against.
use std::marker::PhantomData;

use rio_core::{bf16, f16, DType, Element, Error, Result, TensorRef};

pub mod reference;

/// A row-major matrix view: row `r` starts `r * row_stride` elements after the first.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    ptr: *const u8,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    _marker: PhantomData<&'a [u8]>,
}

// SAFETY: a shared view of plain numbers.
unsafe impl Send for MatRef<'_> {}
unsafe impl Sync for MatRef<'_> {}

impl<'a> MatRef<'a> {
    pub fn from_slice<T: Element>(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "{} elements cannot hold {rows}x{cols}", data.len());
        MatRef { ptr: data.as_ptr() as *const u8, dtype: T::DTYPE, rows, cols, row_stride: cols, _marker: PhantomData }
    }

    /// A 2-D tensor whose rows are contiguous.
    pub fn from_tensor(t: &TensorRef<'a>, arg: &str) -> Result<Self> {
        if t.ndim() != 2 {
            return Err(Error::shape(arg, "a matrix (rows, cols)", t.shape()));
        }
        let (rows, cols) = (t.shape()[0], t.shape()[1]);
        if cols > 1 && t.strides()[1] != 1 || rows > 1 && t.strides()[0] < cols as isize {
            return Err(Error::value(arg, "rows must be contiguous and must not overlap"));
        }
        let row_stride = if rows > 1 { t.strides()[0] as usize } else { cols };
        Ok(MatRef { ptr: t.as_ptr(), dtype: t.dtype(), rows, cols, row_stride, _marker: PhantomData })
    }

    /// Rows `[start, start + len)`.
    pub fn rows_range(&self, start: usize, len: usize) -> MatRef<'a> {
        assert!(start + len <= self.rows);
        MatRef {
            // SAFETY: the range is inside the matrix.
            ptr: unsafe { self.ptr.add(start * self.row_stride * self.dtype.size()) },
            rows: len,
            ..*self
        }
    }

    /// Row `r` as a typed slice.
    pub fn row<T: Element>(&self, r: usize) -> &'a [T] {
        assert_eq!(T::DTYPE, self.dtype);
        assert!(r < self.rows);
        // SAFETY: r is in range and rows are contiguous runs of `cols` elements.
        unsafe { std::slice::from_raw_parts((self.ptr as *const T).add(r * self.row_stride), self.cols) }
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Element (r, c) widened to f32; for tests and reference code.
    pub fn get_f32(&self, r: usize, c: usize) -> f32 {
        match self.dtype {
            DType::F32 => self.row::<f32>(r)[c],
            DType::BF16 => self.row::<bf16>(r)[c].to_f32(),
            DType::F16 => self.row::<f16>(r)[c].to_f32(),
            DType::I32 => self.row::<i32>(r)[c] as f32,
            DType::I64 => self.row::<i64>(r)[c] as f32,
        }
    }
}

/// `out[m * ldo + n] = Σ_k x[m, k] · w[n, k]` on the calling thread, with the fastest kernel for
/// the dtypes and the active instruction set. Supported pairs: (bf16, bf16), (f32, f32), (f32, f16),
/// (f32, bf16); anything else goes through the reference twin.
pub fn matmul_nt(x: MatRef<'_>, w: MatRef<'_>, out: &mut [f32], ldo: usize) {
    assert_eq!(x.cols, w.cols, "inner dimensions differ");
    assert!(x.rows == 0 || out.len() >= (x.rows - 1) * ldo + w.rows);
    portable(x, w, out, ldo);
}

/// Widening dot products, written so the compiler vectorises them.
fn portable(x: MatRef<'_>, w: MatRef<'_>, out: &mut [f32], ldo: usize) {
    let k = x.cols;
    let mut xrow = vec![0f32; k];
    let mut wrow = vec![0f32; k];
    for n in 0..w.rows {
        widen(w, n, &mut wrow);
        for m in 0..x.rows {
            widen(x, m, &mut xrow);
            out[m * ldo + n] = xrow.iter().zip(&wrow).map(|(a, b)| a * b).sum();
        }
    }
}

fn widen(mat: MatRef<'_>, r: usize, dst: &mut [f32]) {
    match mat.dtype {
        DType::F32 => dst.copy_from_slice(mat.row::<f32>(r)),
        DType::BF16 => dst.iter_mut().zip(mat.row::<bf16>(r)).for_each(|(d, s)| *d = s.to_f32()),
        DType::F16 => dst.iter_mut().zip(mat.row::<f16>(r)).for_each(|(d, s)| *d = s.to_f32()),
        _ => (0..mat.cols).for_each(|c| dst[c] = mat.get_f32(r, c)),
    }
}
