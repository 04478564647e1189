//! RMSNorm with a plain weight, `x · rsqrt(mean(x²) + eps) · w` (`Qwen3MoeRMSNorm`); the
//! Qwen3.5 `1 + w` form lives in `rio_cpu::ops::norm`.
use super::Precision;

/// In place over every row of `w.len()` elements of `x`. The normalisation runs in f32; in bf16
/// it is rounded before the weight multiplies it, and the product is rounded again (transformers'
/// `weight * hidden_states.to(input_dtype)`).
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32, precision: Precision) {
    let n = w.len();
    assert!(n > 0 && x.len().is_multiple_of(n), "rows of {n} do not tile {} elements", x.len());
    for row in x.chunks_exact_mut(n) {
        let mean_square = row.iter().map(|&v| v * v).sum::<f32>() / n as f32;
        let scale = 1.0 / (mean_square + eps).sqrt();
        for (v, &g) in row.iter_mut().zip(w) {
            *v = precision.round1(g * precision.round1(*v * scale));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_float64_reference() {
        let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
        let w = [0.5f32, -1.5, 2.0, 0.25];
        let mut got = x.clone();
        rms_norm_inplace(&mut got, &w, 1e-6, Precision::F32);
        for (r, row) in x.chunks(4).enumerate() {
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 4.0;
            for c in 0..4 {
                let want = row[c] as f64 / (ms + 1e-6).sqrt() * w[c] as f64;
                assert!((got[r * 4 + c] as f64 - want).abs() < 1e-5, "row {r} col {c}");
            }
        }
    }
}
