//! Moving activation rows between the caller's tensors and the kernels' contiguous buffers.
use rayon::prelude::*;
use rio_core::{bf16, f16, DType, Element, Error, Result, Tensor, TensorMut, TensorRef};

use crate::gemm::MatRef;
use crate::scratch::{Plain, Scratch};

/// Rows of `x [T, H]` in `dtype`, contiguous: row `p` is `x[order[p] / per_row]` when an order is
/// given (the dispatch gather), or `x[p]` otherwise.
pub fn gather(x: &TensorRef<'_>, order: Option<&[u32]>, per_row: usize, dtype: DType) -> Result<Tensor> {
    let src = MatRef::from_tensor(x, "x")?;
    let n = order.map_or(src.rows, |o| o.len());
    let mut out = Tensor::zeros(dtype, &[n, src.cols]);
    match dtype {
        DType::BF16 => gather_into(src, order, per_row, out.as_mut_slice::<bf16>()),
        DType::F32 => gather_into(src, order, per_row, out.as_mut_slice::<f32>()),
        other => return Err(Error::Unsupported(format!("activations in {other}"))),
    }
    Ok(out)
}

/// [`gather`] into `out` (rows of `src.cols`, one per row gathered).
pub fn gather_into<T: RowElement + Send>(src: MatRef<'_>, order: Option<&[u32]>, per_row: usize, out: &mut [T]) {
    let row_of = |p: usize| order.map_or(p, |o| o[p] as usize / per_row);
    fill_rows(out, src.cols, |p, dst| convert_row(src, row_of(p), dst))
}

/// Rows of `x` in `T`: `x` itself when it already is, else a converted copy in `buf`.
pub fn in_dtype<'a, T: RowElement + Element + Plain + Send>(x: &TensorRef<'a>, buf: &'a mut Scratch<T>) -> Result<MatRef<'a>> {
    let src = MatRef::from_tensor(x, "x")?;
    if src.dtype == T::DTYPE {
        return Ok(src);
    }
    *buf = Scratch::stale(src.rows * src.cols);
    gather_into(src, None, 1, buf);
    Ok(MatRef::from_slice(buf, src.rows, src.cols))
}

/// Rows below which a gather stays on the calling thread.
const PARALLEL_MIN_ROWS: usize = 256;

/// `fill(p, row p)` for every row of `buf` (rows of `cols`), on the pool when there are many.
fn fill_rows<T: Send>(buf: &mut [T], cols: usize, fill: impl Fn(usize, &mut [T]) + Sync) {
    if cols == 0 {
        return;
    }
    if buf.len() / cols < PARALLEL_MIN_ROWS {
        buf.chunks_exact_mut(cols).enumerate().for_each(|(p, row)| fill(p, row));
    } else {
        crate::threads::pool().install(|| buf.par_chunks_exact_mut(cols).enumerate().for_each(|(p, row)| fill(p, row)));
    }
}

/// A destination element type for [`convert_row`].
pub trait RowElement: Copy {
    fn from_f32(v: f32) -> Self;
    fn from_bf16(v: bf16) -> Self;
}
impl RowElement for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_bf16(v: bf16) -> Self {
        v.to_f32()
    }
}
impl RowElement for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn from_bf16(v: bf16) -> Self {
        v
    }
}

/// Row `r` of `src`, converted (round to nearest even) into `dst`.
pub fn convert_row<T: RowElement>(src: MatRef<'_>, r: usize, dst: &mut [T]) {
    match src.dtype {
        DType::BF16 => dst.iter_mut().zip(src.row::<bf16>(r)).for_each(|(d, &s)| *d = T::from_bf16(s)),
        DType::F32 => dst.iter_mut().zip(src.row::<f32>(r)).for_each(|(d, &s)| *d = T::from_f32(s)),
        DType::F16 => dst.iter_mut().zip(src.row::<f16>(r)).for_each(|(d, &s)| *d = T::from_f32(s.to_f32())),
        _ => unreachable!("callers check for float dtypes"),
    }
}

/// Checks an output tensor: contiguous, float, of the given shape.
pub fn expect_output(out: &TensorMut<'_>, arg: &str, shape: &[usize]) -> Result<()> {
    out.as_ref().expect_dtype(arg, &[DType::BF16, DType::F16, DType::F32])?;
    if out.shape() != shape {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        return Err(Error::shape(arg, format!("({})", dims.join(", ")), out.shape()));
    }
    if !out.is_contiguous() {
        return Err(Error::value(arg, "must be contiguous"));
    }
    Ok(())
}

/// Writes f32 results into `out`, rounding to its dtype.
pub fn store(src: &[f32], out: &mut TensorMut<'_>) -> Result<()> {
    match out.dtype() {
        DType::F32 => out.as_mut_slice::<f32>().expect("checked contiguous").copy_from_slice(src),
        DType::BF16 => {
            out.as_mut_slice::<bf16>().expect("checked contiguous").iter_mut().zip(src).for_each(|(d, &s)| *d = bf16::from_f32(s))
        }
        DType::F16 => out.as_mut_slice::<f16>().expect("checked contiguous").iter_mut().zip(src).for_each(|(d, &s)| *d = f16::from_f32(s)),
        other => return Err(Error::dtype("out", "float32, float16 or bfloat16", other)),
    }
    Ok(())
}

/// Splits `buf` into consecutive mutable runs of `offsets[e+1] - offsets[e]` rows of `row_len`.
pub fn split_rows_mut<'a, T>(mut buf: &'a mut [T], offsets: &[u32], row_len: usize) -> Vec<&'a mut [T]> {
    let mut parts = Vec::with_capacity(offsets.len().saturating_sub(1));
    for pair in offsets.windows(2) {
        let (head, tail) = buf.split_at_mut((pair[1] - pair[0]) as usize * row_len);
        parts.push(head);
        buf = tail;
    }
    parts
}
