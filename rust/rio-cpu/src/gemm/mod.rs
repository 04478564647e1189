//! `out = x · wᵀ`: the one matrix product every linear layer and expert needs.
//!
//! `x [M, K]` holds activations (one row per token), `w [N, K]` weights in checkpoint (out, in)
//! order, `out [M, N]` fp32. Kernels accumulate in fp32 whatever the input dtypes, and read the
//! weights in place (no repacking), so mmap'd checkpoints are used as they are.
//!
//! One kernel per instruction set, chosen at run time ([`matmul_nt_with`] takes the level
//! explicitly, for tests and benchmarks of the slower paths):
//! - `amx`: bf16 · bf16 on AMX tiles (activations packed once per call), for M ≥ [`AMX_MIN_ROWS`];
//! - `avx512_bf16`: bf16 · bf16 dot products with `vdpbf16ps` (the GEMV / few-token path);
//! - `avx512_f32`: f32 · f32 as outer products over weights transposed once per call, for the
//!   small fp32 GEMMs of the GDN chunk and attention prefill ([`matmul_nt_f32_outer`]);
//! - `avx512`, `avx2`: rows widened to f32, then f32 FMA dot products (f16, bf16, f32 weights);
//! - `portable`: plain Rust for every other case and other architectures.
//!
//! [`reference::matmul_nt`] is the plain f64 twin every kernel is tested against.
use std::marker::PhantomData;

use rio_core::{bf16, f16, DType, Element, Error, Result, TensorRef};

use crate::features::{self, Isa};

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_bf16;
#[cfg(target_arch = "x86_64")]
mod avx512_f32;
mod portable;
pub mod reference;
#[cfg(target_arch = "x86_64")]
mod widened;

/// Below this many activation rows, the AMX path (which packs the rows into tiles) loses to
/// `vdpbf16ps` dot products.
pub const AMX_MIN_ROWS: usize = 8;

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

    /// Rows of `cols` elements, `row_stride` apart (`row_stride >= cols`).
    pub fn from_slice_strided<T: Element>(data: &'a [T], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(row_stride >= cols, "row stride {row_stride} is shorter than a row of {cols}");
        assert!(
            rows == 0 || data.len() >= (rows - 1) * row_stride + cols,
            "{} elements cannot hold {rows} rows of stride {row_stride}",
            data.len()
        );
        MatRef { ptr: data.as_ptr() as *const u8, dtype: T::DTYPE, rows, cols, row_stride, _marker: PhantomData }
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

/// Work (multiply-adds) below which [`matmul_nt`] stays on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Few-row products: at most this many weight bands per thread, of at least this many bytes
/// (a band is one stream; shorter ones pay their start-up more often).
const GEMV_BANDS_PER_THREAD: usize = 4;
const GEMV_MIN_BAND_BYTES: usize = 1 << 20;

/// `out[m * ldo + n] = Σ_k x[m, k] · w[n, k]` with the fastest kernel for the dtypes and the
/// active instruction set. Large products are split across the worker pool
/// ([`crate::threads::pool`]; nested in other pool work, the bands join that work); small ones
/// run on the calling thread. Supported pairs with SIMD
/// kernels: (bf16, bf16), (f32 | bf16, f32 | f16 | bf16); anything else runs the portable loop.
pub fn matmul_nt(x: MatRef<'_>, w: MatRef<'_>, out: &mut [f32], ldo: usize) {
    check_shapes(x, w, out.len(), ldo);
    let isa = features::active_isa();
    let threads = crate::threads::num_threads();
    if threads <= 1 || x.rows * w.rows * x.cols < PARALLEL_MIN_MACS {
        // SAFETY: shapes checked above.
        return unsafe { matmul_nt_raw(isa, x, w, out.as_mut_ptr(), ldo) };
    }
    let out_ptr = SyncPtr(out.as_mut_ptr());
    // Many rows: each thread takes a band of rows (and packs only those); few rows: a band of
    // weight rows, so every weight is read once. Weight bands are cut finer (up to
    // GEMV_BANDS_PER_THREAD per thread, at least GEMV_MIN_BAND_BYTES each) so a thread slowed
    // by other work on the core hands its last bands to the other instead of holding up the call.
    let split_rows = x.rows >= 64 * threads;
    let bands = match split_rows {
        true => threads,
        false => (w.rows * w.row_stride * w.dtype.size() / GEMV_MIN_BAND_BYTES).clamp(threads, GEMV_BANDS_PER_THREAD * threads),
    };
    let (len, align) = if split_rows { (x.rows, 32) } else { (w.rows, 16) };
    let band = len.div_ceil(bands).div_ceil(align) * align;
    crate::threads::pool().install(|| {
        rayon::scope(|s| {
            for start in (0..len).step_by(band.max(1)) {
                let size = band.min(len - start);
                let out_ptr = &out_ptr;
                s.spawn(move |_| {
                    // SAFETY: bands write disjoint elements of `out`, whose extent was checked.
                    unsafe {
                        if split_rows {
                            matmul_nt_raw(isa, x.rows_range(start, size), w, out_ptr.get().add(start * ldo), ldo)
                        } else {
                            matmul_nt_raw(isa, x, w.rows_range(start, size), out_ptr.get().add(start), ldo)
                        }
                    }
                });
            }
        })
    });
}

/// [`matmul_nt`] on the calling thread with the kernels of instruction set `isa` (capped at what
/// this machine has).
pub fn matmul_nt_with(isa: Isa, x: MatRef<'_>, w: MatRef<'_>, out: &mut [f32], ldo: usize) {
    check_shapes(x, w, out.len(), ldo);
    let isa = isa.min(features::detected().best_isa());
    // SAFETY: shapes checked above.
    unsafe { matmul_nt_raw(isa, x, w, out.as_mut_ptr(), ldo) }
}

/// f32 · f32 `x · wᵀ` on the calling thread for small products whose weights every row re-reads
/// (the Gated DeltaNet chunk, attention prefill): outer products over `w` transposed once per
/// call when AVX-512 is active, else [`matmul_nt_with`]. Each output is a sequential sum over k,
/// so a row's result does not depend on how many rows the call has.
pub fn matmul_nt_f32_outer(isa: Isa, x: MatRef<'_>, w: MatRef<'_>, out: &mut [f32], ldo: usize) {
    check_shapes(x, w, out.len(), ldo);
    let isa = isa.min(features::detected().best_isa());
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 && x.dtype == DType::F32 && w.dtype == DType::F32 && x.rows > 0 && w.rows > 0 {
        // SAFETY: shapes checked above; AVX-512F is available.
        return unsafe { avx512_f32::matmul_nt(x, w, out.as_mut_ptr(), ldo) };
    }
    // SAFETY: shapes checked above.
    unsafe { matmul_nt_raw(isa, x, w, out.as_mut_ptr(), ldo) }
}

fn check_shapes(x: MatRef<'_>, w: MatRef<'_>, out_len: usize, ldo: usize) {
    assert_eq!(x.cols, w.cols, "inner dimensions differ");
    assert!(x.rows == 0 || w.rows == 0 || (ldo >= w.rows && out_len >= (x.rows - 1) * ldo + w.rows), "out is too small");
}

/// A pointer that tasks writing disjoint elements may share.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub *mut T);

impl<T> SyncPtr<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    pub fn get(&self) -> *mut T {
        self.0
    }
}
// SAFETY: users write disjoint elements only.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

/// The kernel dispatch.
///
/// # Safety
/// `out` must be valid for writes of `out[m * ldo + n]` for every m < x.rows, n < w.rows, and
/// `isa` must be available on this machine.
pub(crate) unsafe fn matmul_nt_raw(isa: Isa, x: MatRef<'_>, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    if x.rows == 0 || w.rows == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use DType::{BF16, F16, F32};
        let widenable = matches!(x.dtype, F32 | BF16) && matches!(w.dtype, F32 | F16 | BF16);
        match (isa, x.dtype, w.dtype) {
            (Isa::Amx, BF16, BF16) if x.rows >= AMX_MIN_ROWS => return amx::matmul_nt(x, w, out, ldo),
            (Isa::Amx | Isa::Avx512Bf16, BF16, BF16) => return avx512_bf16::matmul_nt(x, w, out, ldo),
            (Isa::Amx | Isa::Avx512Bf16 | Isa::Avx512, _, _) if widenable => return avx512::matmul_nt(x, w, out, ldo),
            (Isa::Avx2, _, _) if widenable => return avx2::matmul_nt(x, w, out, ldo),
            _ => {}
        }
    }
    let _ = isa;
    portable::matmul_nt(x, w, out, ldo)
}

#[cfg(test)]
pub(crate) mod tests;
