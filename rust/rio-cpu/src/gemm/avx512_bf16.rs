//! bf16 · bf16 dot products with AVX-512-BF16 `vdpbf16ps` (pairs of bf16 products summed into
//! f32 lanes), reading both matrices in place. The decode path: each weight row is streamed
//! once and used for up to four activation rows, while the next weight rows are prefetched (a
//! row of a 2048-wide matrix is one 4 KiB page, too short a stream for the hardware prefetcher).
use std::arch::x86_64::*;

use super::MatRef;

/// Weight rows per block: eight streams in flight for one or two activation rows (16
/// accumulators), four when more rows share each load.
const WIDE_WEIGHT_ROWS: usize = 8;
const WEIGHT_ROWS: usize = 4;
const ACT_ROWS: usize = 4;
/// Weight rows ahead of the block whose columns are prefetched.
const PREFETCH_ROWS: usize = 8;

/// # Safety
/// See [`super::matmul_nt_raw`]; both matrices bf16; needs AVX-512F/BW/BF16.
pub(crate) unsafe fn matmul_nt(x: MatRef<'_>, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    let (xp, wp) = (x.as_ptr() as *const u16, w.as_ptr() as *const u16);
    let (ldx, ldw) = (x.row_stride, w.row_stride);
    let block_rows = if x.rows <= 2 { WIDE_WEIGHT_ROWS } else { WEIGHT_ROWS };
    for n0 in (0..w.rows).step_by(block_rows) {
        let wrows = block_rows.min(w.rows - n0);
        for m0 in (0..x.rows).step_by(ACT_ROWS) {
            let rows = ACT_ROWS.min(x.rows - m0);
            // The first pass over these weight rows fetches the next ones.
            let prefetch = m0 == 0 && n0 + block_rows < w.rows;
            dots(xp.add(m0 * ldx), ldx, wp.add(n0 * ldw), ldw, x.cols, rows, wrows, prefetch, out.add(m0 * ldo + n0), ldo);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn dots(
    x: *const u16,
    ldx: usize,
    w: *const u16,
    ldw: usize,
    k: usize,
    rows: usize,
    wrows: usize,
    prefetch: bool,
    out: *mut f32,
    ldo: usize,
) {
    macro_rules! by_rows {
        ($nr:literal, $w:expr, $pf:expr, $out:expr) => {
            match rows {
                4 => block::<4, $nr>(x, ldx, $w, ldw, k, $pf, $out, ldo),
                3 => block::<3, $nr>(x, ldx, $w, ldw, k, $pf, $out, ldo),
                2 => block::<2, $nr>(x, ldx, $w, ldw, k, $pf, $out, ldo),
                _ => block::<1, $nr>(x, ldx, $w, ldw, k, $pf, $out, ldo),
            }
        };
    }
    if wrows == 8 && rows <= 2 {
        match rows {
            2 => block::<2, 8>(x, ldx, w, ldw, k, prefetch, out, ldo),
            _ => block::<1, 8>(x, ldx, w, ldw, k, prefetch, out, ldo),
        }
    } else if wrows >= 4 {
        by_rows!(4, w, prefetch, out);
        for j in 4..wrows {
            by_rows!(1, w.add(j * ldw), false, out.add(j))
        }
    } else {
        for j in 0..wrows {
            by_rows!(1, w.add(j * ldw), false, out.add(j))
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
unsafe fn load(p: *const u16, mask: __mmask32) -> __m512bh {
    std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(mask, p as *const i16))
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const MR: usize, const NR: usize>(
    x: *const u16,
    ldx: usize,
    w: *const u16,
    ldw: usize,
    k: usize,
    prefetch: bool,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let mut c = 0;
    while c < k {
        if prefetch {
            // The same columns of the next PREFETCH_ROWS rows (more than NR when NR is 4: the
            // streams in flight, not the rows computed on, set the bandwidth); prefetches never
            // fault, wrapping_add keeps the address arithmetic defined past the last row.
            for j in 0..PREFETCH_ROWS {
                _mm_prefetch::<_MM_HINT_T1>(w.wrapping_add((NR + j) * ldw + c) as *const i8);
            }
        }
        // Full 32-element steps, then one masked step for the tail.
        let mask: __mmask32 = if c + 32 <= k { !0 } else { (1u32 << (k - c)) - 1 };
        let mut wv = [std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()); NR];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = load(w.add(j * ldw + c), mask);
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let xv = load(x.add(i * ldx + c), mask);
            for (a, &wj) in row.iter_mut().zip(&wv) {
                *a = _mm512_dpbf16_ps(*a, xv, wj);
            }
        }
        c += 32;
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            *out.add(i * ldo + j) = _mm512_reduce_add_ps(a);
        }
    }
}
