//! The driver shared by the f32-FMA kernels (AVX-512, AVX2): rows are widened to f32 into
//! zero-padded buffers (so the inner loop has no tail), then small blocks of dot products run
//! over them. It serves every dtype pair without a native kernel (f16 weights, f32 weights,
//! bf16 weights on machines without `vdpbf16ps`).
use super::MatRef;

pub(super) struct F32Kernel {
    /// f32 elements per vector; buffer rows are padded to a multiple of this.
    pub lanes: usize,
    /// Most activation rows one `dots` call handles.
    pub max_rows: usize,
    /// Row `r` of a matrix widened into `dst[..cols]`.
    pub widen: unsafe fn(MatRef<'_>, usize, *mut f32),
    /// `out[i * ldo + j] = Σ_k x[i * ld + k] · w[j * ld + k]` for i < rows, j < wrows (≤ 4),
    /// over `ld` (padded) columns: `dots(x, w, ld, rows, wrows, out, ldo)`.
    pub dots: unsafe fn(*const f32, *const f32, usize, usize, usize, *mut f32, usize),
}

/// Activation rows widened at a time; weight rows are widened once per chunk.
const ROW_CHUNK: usize = 64;
const WEIGHT_ROWS: usize = 4;

/// # Safety
/// See [`super::matmul_nt_raw`]; the kernel's instruction set must be available.
pub(super) unsafe fn matmul_nt(kernel: &F32Kernel, x: MatRef<'_>, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    let ld = x.cols.next_multiple_of(kernel.lanes).max(kernel.lanes);
    let mut xbuf = vec![0f32; x.rows.min(ROW_CHUNK) * ld];
    let mut wbuf = vec![0f32; WEIGHT_ROWS * ld];
    for m0 in (0..x.rows).step_by(ROW_CHUNK) {
        let rows = ROW_CHUNK.min(x.rows - m0);
        for i in 0..rows {
            (kernel.widen)(x, m0 + i, xbuf.as_mut_ptr().add(i * ld));
        }
        for n0 in (0..w.rows).step_by(WEIGHT_ROWS) {
            let wrows = WEIGHT_ROWS.min(w.rows - n0);
            for j in 0..wrows {
                (kernel.widen)(w, n0 + j, wbuf.as_mut_ptr().add(j * ld));
            }
            for i0 in (0..rows).step_by(kernel.max_rows) {
                let block = kernel.max_rows.min(rows - i0);
                (kernel.dots)(xbuf.as_ptr().add(i0 * ld), wbuf.as_ptr(), ld, block, wrows, out.add((m0 + i0) * ldo + n0), ldo);
            }
        }
    }
}
