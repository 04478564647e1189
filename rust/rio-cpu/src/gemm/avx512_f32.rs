//! AVX-512F f32 · f32 kernel as outer products: `w` is transposed once per call into k-major
//! panels of 32 columns, and each step broadcasts one element of `x` against two 16-lane vectors
//! of the panel into a 6 × 32 block of accumulators. Unlike the dot-product kernels there is no
//! horizontal reduction per output, which is what the small fp32 products of the chunked Gated
//! DeltaNet and of attention prefill (K = 64..256) spend most of their time on otherwise.
use std::arch::x86_64::*;

use super::MatRef;

/// Output columns per panel (two zmm registers).
const NR: usize = 32;
/// Rows of `x` per block: 6 × 2 accumulators + 2 panel vectors + 1 broadcast fit the 32 zmm.
const MR: usize = 6;

/// # Safety
/// See [`super::matmul_nt_raw`]; needs AVX-512F; `x` and `w` are f32.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn matmul_nt(x: MatRef<'_>, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    let (m, n, k) = (x.rows, w.rows, x.cols);
    let panels = n.div_ceil(NR);
    // wt[p][kk][j] = w[p·NR + j, kk], zero past n.
    let mut wt = vec![0f32; panels * k * NR];
    let wp = w.as_ptr() as *const f32;
    for j in 0..n {
        let (p, jj) = (j / NR, j % NR);
        let row = wp.add(j * w.row_stride);
        let panel = &mut wt[p * k * NR..(p + 1) * k * NR];
        for kk in 0..k {
            panel[kk * NR + jj] = *row.add(kk);
        }
    }
    let xp = x.as_ptr() as *const f32;
    for p in 0..panels {
        let cols = NR.min(n - p * NR);
        let panel = wt.as_ptr().add(p * k * NR);
        let mut i = 0;
        while i < m {
            let rows = MR.min(m - i);
            let (xi, oi) = (xp.add(i * x.row_stride), out.add(i * ldo + p * NR));
            match rows {
                6 => block::<6>(xi, x.row_stride, panel, k, oi, ldo, cols),
                5 => block::<5>(xi, x.row_stride, panel, k, oi, ldo, cols),
                4 => block::<4>(xi, x.row_stride, panel, k, oi, ldo, cols),
                3 => block::<3>(xi, x.row_stride, panel, k, oi, ldo, cols),
                2 => block::<2>(xi, x.row_stride, panel, k, oi, ldo, cols),
                _ => block::<1>(xi, x.row_stride, panel, k, oi, ldo, cols),
            }
            i += rows;
        }
    }
}

/// `out[r, 0..cols] = Σ_kk x[r, kk] · panel[kk, 0..cols]` for the `R` rows at `x`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block<const R: usize>(x: *const f32, xs: usize, panel: *const f32, k: usize, out: *mut f32, ldo: usize, cols: usize) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for kk in 0..k {
        let b0 = _mm512_loadu_ps(panel.add(kk * NR));
        let b1 = _mm512_loadu_ps(panel.add(kk * NR + 16));
        for (r, a) in acc.iter_mut().enumerate() {
            let xv = _mm512_set1_ps(*x.add(r * xs + kk));
            a[0] = _mm512_fmadd_ps(xv, b0, a[0]);
            a[1] = _mm512_fmadd_ps(xv, b1, a[1]);
        }
    }
    let mask = |from: usize| -> __mmask16 {
        let live = cols.saturating_sub(from).min(16);
        if live == 16 {
            0xffff
        } else {
            ((1u32 << live) - 1) as __mmask16
        }
    };
    let (m0, m1) = (mask(0), mask(16));
    for (r, a) in acc.iter().enumerate() {
        let o = out.add(r * ldo);
        _mm512_mask_storeu_ps(o, m0, a[0]);
        if m1 != 0 {
            _mm512_mask_storeu_ps(o.add(16), m1, a[1]);
        }
    }
}
