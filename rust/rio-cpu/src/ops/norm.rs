//! Norms (spec 3.1 steps 4 and 8, spec 4).

/// `out = x · rsqrt(mean(x²) + eps) · (1 + w)` over each row of `w.len()` elements
/// (`Qwen3_5MoeRMSNorm`: the stored weight is zero-centred).
pub fn rms_norm_1p(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    assert_eq!(x.len(), out.len());
    assert!(n > 0 && x.len().is_multiple_of(n), "rows of {n} do not tile {} elements", x.len());
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let scale = inv_rms(xr, eps);
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * (1.0 + g);
        }
    }
}

/// In place: every row of `w.len()` elements of `x` through [`rms_norm_1p`].
pub fn rms_norm_1p_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    assert!(n > 0 && x.len().is_multiple_of(n), "rows of {n} do not tile {} elements", x.len());
    for row in x.chunks_exact_mut(n) {
        let scale = inv_rms(row, eps);
        for (v, &g) in row.iter_mut().zip(w) {
            *v = *v * scale * (1.0 + g);
        }
    }
}

/// `o ← o · rsqrt(mean(o²) + eps) · w · silu(z)` per row of `w.len()` (`Qwen3_5MoeRMSNormGated`;
/// here the weight is plain, not `1 + w`).
pub fn rms_norm_gated_inplace(o: &mut [f32], z: &[f32], w: &[f32], eps: f32) {
    let n = w.len();
    assert_eq!(o.len(), z.len());
    assert!(n > 0 && o.len().is_multiple_of(n), "rows of {n} do not tile {} elements", o.len());
    for (row, zr) in o.chunks_exact_mut(n).zip(z.chunks_exact(n)) {
        let scale = inv_rms(row, eps);
        for ((v, &g), &zv) in row.iter_mut().zip(w).zip(zr) {
            *v = *v * scale * g * super::silu(zv);
        }
    }
}

/// [`rms_norm_gated_inplace`] in transformers' bf16 flow: the normalised row is rounded to bf16,
/// multiplied by the (bf16) weight and rounded, then multiplied by `silu(z)` in f32 and rounded.
pub fn rms_norm_gated_bf16_inplace(o: &mut [f32], z: &[f32], w: &[f32], eps: f32) {
    let n = w.len();
    assert_eq!(o.len(), z.len());
    assert!(n > 0 && o.len().is_multiple_of(n), "rows of {n} do not tile {} elements", o.len());
    let r = |v: f32| rio_core::bf16::from_f32(v).to_f32();
    for (row, zr) in o.chunks_exact_mut(n).zip(z.chunks_exact(n)) {
        let scale = inv_rms(row, eps);
        for ((v, &g), &zv) in row.iter_mut().zip(w).zip(zr) {
            *v = r(r(g * r(*v * scale)) * super::silu(zv));
        }
    }
}

/// `x ← x · rsqrt(Σx² + 1e-6)` per row of `n` (the GDN q/k normalisation; eps is fixed).
pub fn l2_norm_inplace(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n) {
        let sum: f32 = row.iter().map(|v| v * v).sum();
        let scale = 1.0 / (sum + 1e-6).sqrt();
        row.iter_mut().for_each(|v| *v *= scale);
    }
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let mean = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (mean + eps).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ seed) % 1000) as f32 / 250.0 - 2.0).collect()
    }

    #[test]
    fn norms_match_float64_formulas() {
        let (rows, n, eps) = (3, 37, 1e-6);
        let x = data(rows * n, 1);
        let z = data(rows * n, 2);
        let w = data(n, 3);
        let mut out = vec![0.0; rows * n];
        rms_norm_1p(&x, &w, eps, &mut out);
        let mut inplace = x.clone();
        rms_norm_1p_inplace(&mut inplace, &w, eps);
        assert_eq!(out, inplace);
        let mut gated = x.clone();
        rms_norm_gated_inplace(&mut gated, &z, &w, eps);
        let mut l2 = x.clone();
        l2_norm_inplace(&mut l2, n);
        for r in 0..rows {
            let xr: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
            let ms = xr.iter().map(|v| v * v).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            let l2inv = 1.0 / (xr.iter().map(|v| v * v).sum::<f64>() + 1e-6).sqrt();
            for c in 0..n {
                let zc = z[r * n + c] as f64;
                let silu = zc / (1.0 + (-zc).exp());
                let want_1p = xr[c] * inv * (1.0 + w[c] as f64);
                let want_gated = xr[c] * inv * w[c] as f64 * silu;
                assert!((out[r * n + c] as f64 - want_1p).abs() < 1e-5);
                assert!((gated[r * n + c] as f64 - want_gated).abs() < 1e-5);
                assert!((l2[r * n + c] as f64 - xr[c] * l2inv).abs() < 1e-6);
            }
        }
    }
}
