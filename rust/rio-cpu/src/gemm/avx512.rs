//! AVX-512F f32 FMA kernel over widened rows (f16 via `vcvtph2ps`, bf16 by a 16-bit shift).
use std::arch::x86_64::*;

use rio_core::{f16, DType};

use super::widened::{self, F32Kernel};
use super::MatRef;

const KERNEL: F32Kernel = F32Kernel { lanes: 16, max_rows: 4, widen: widen_row, dots };

/// # Safety
/// See [`super::matmul_nt_raw`]; needs AVX-512F/BW.
pub(super) unsafe fn matmul_nt(x: MatRef<'_>, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    widened::matmul_nt(&KERNEL, x, w, out, ldo)
}

#[target_feature(enable = "avx512f,avx512bw,f16c")]
unsafe fn widen_row(mat: MatRef<'_>, r: usize, dst: *mut f32) {
    let cols = mat.cols;
    let src = mat.as_ptr().add(r * mat.row_stride * mat.dtype.size());
    let mut c = 0;
    match mat.dtype {
        DType::F32 => std::ptr::copy_nonoverlapping(src as *const f32, dst, cols),
        DType::BF16 => {
            let s = src as *const u16;
            while c + 16 <= cols {
                let v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(s.add(c) as *const __m256i));
                _mm512_storeu_ps(dst.add(c), _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)));
                c += 16;
            }
            for c in c..cols {
                *dst.add(c) = f32::from_bits((*s.add(c) as u32) << 16);
            }
        }
        DType::F16 => {
            let s = src as *const u16;
            while c + 16 <= cols {
                _mm512_storeu_ps(dst.add(c), _mm512_cvtph_ps(_mm256_loadu_si256(s.add(c) as *const __m256i)));
                c += 16;
            }
            for c in c..cols {
                *dst.add(c) = f16::from_bits(*s.add(c)).to_f32();
            }
        }
        other => unreachable!("no widening kernel for {other}"),
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn dots(x: *const f32, w: *const f32, ld: usize, rows: usize, wrows: usize, out: *mut f32, ldo: usize) {
    macro_rules! by_rows {
        ($nr:literal, $w:expr, $out:expr) => {
            match rows {
                4 => block::<4, $nr>(x, $w, ld, $out, ldo),
                3 => block::<3, $nr>(x, $w, ld, $out, ldo),
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

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block<const MR: usize, const NR: usize>(x: *const f32, w: *const f32, ld: usize, out: *mut f32, ldo: usize) {
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let mut k = 0;
    while k < ld {
        let mut wv = [_mm512_setzero_ps(); NR];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(w.add(j * ld + k));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let xv = _mm512_loadu_ps(x.add(i * ld + k));
            for (a, &wj) in row.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, wj, *a);
            }
        }
        k += 16;
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            *out.add(i * ldo + j) = _mm512_reduce_add_ps(a);
        }
    }
}
