//! AVX2 + FMA + F16C f32 kernel over widened rows, for x86-64 machines without AVX-512.
use std::arch::x86_64::*;

use rio_core::{f16, DType};

use super::widened::{self, F32Kernel};
use super::MatRef;

/// Two activation rows x four weight rows: 8 accumulators leave room in 16 ymm registers.
const KERNEL: F32Kernel = F32Kernel { lanes: 8, max_rows: 2, widen: widen_row, dots };

/// # Safety
/// See [`super::matmul_nt_raw`]; needs AVX2, FMA and F16C.
pub(super) unsafe fn matmul_nt(x: MatRef<'_>, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    widened::matmul_nt(&KERNEL, x, w, out, ldo)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_row(mat: MatRef<'_>, r: usize, dst: *mut f32) {
    let cols = mat.cols;
    let src = mat.as_ptr().add(r * mat.row_stride * mat.dtype.size());
    let mut c = 0;
    match mat.dtype {
        DType::F32 => std::ptr::copy_nonoverlapping(src as *const f32, dst, cols),
        DType::BF16 => {
            let s = src as *const u16;
            while c + 8 <= cols {
                let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(s.add(c) as *const __m128i));
                _mm256_storeu_ps(dst.add(c), _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)));
                c += 8;
            }
            for c in c..cols {
                *dst.add(c) = f32::from_bits((*s.add(c) as u32) << 16);
            }
        }
        DType::F16 => {
            let s = src as *const u16;
            while c + 8 <= cols {
                _mm256_storeu_ps(dst.add(c), _mm256_cvtph_ps(_mm_loadu_si128(s.add(c) as *const __m128i)));
                c += 8;
            }
            for c in c..cols {
                *dst.add(c) = f16::from_bits(*s.add(c)).to_f32();
            }
        }
        other => unreachable!("no widening kernel for {other}"),
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dots(x: *const f32, w: *const f32, ld: usize, rows: usize, wrows: usize, out: *mut f32, ldo: usize) {
    macro_rules! by_rows {
        ($nr:literal, $w:expr, $out:expr) => {
            match rows {
                2 => block::<2, $nr>(x, $w, ld, $out, ldo),
                _ => block::<1, $nr>(x, $w, ld, $out, ldo),
            }
        };
    }
    if wrows == 4 {
        by_rows!(4, w, out)
    } else {
        for j in 0..wrows {
            by_rows!(1, w.add(j * ld), out.add(j))
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block<const MR: usize, const NR: usize>(x: *const f32, w: *const f32, ld: usize, out: *mut f32, ldo: usize) {
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    let mut k = 0;
    while k < ld {
        let mut wv = [_mm256_setzero_ps(); NR];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(w.add(j * ld + k));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let xv = _mm256_loadu_ps(x.add(i * ld + k));
            for (a, &wj) in row.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(xv, wj, *a);
            }
        }
        k += 8;
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            *out.add(i * ldo + j) = hsum(a);
        }
    }
}

#[target_feature(enable = "avx2")]
#[inline]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}
