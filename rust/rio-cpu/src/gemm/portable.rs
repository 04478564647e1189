//! The portable kernel: widening dot products written so the compiler vectorises them.
use rio_core::{bf16, f16, DType};

use super::MatRef;

/// # Safety
/// See [`super::matmul_nt_raw`].
pub unsafe fn matmul_nt(x: MatRef<'_>, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    let k = x.cols;
    let mut xrow = vec![0f32; k];
    let mut wrow = vec![0f32; k];
    for n in 0..w.rows {
        widen(w, n, &mut wrow);
        for m in 0..x.rows {
            widen(x, m, &mut xrow);
            *out.add(m * ldo + n) = xrow.iter().zip(&wrow).map(|(a, b)| a * b).sum();
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
