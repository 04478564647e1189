//! Rotary position embedding, rotate-half (NeoX) convention on the first `rotary_dim` channels
//! of each head (spec 2.3). For text, interleaved M-RoPE equals this 1-D form.

/// The inverse frequencies `θ^(-2i/r)`, i < r/2, computed in f32 as transformers does.
pub fn inv_freq(theta: f64, rotary_dim: usize) -> Vec<f32> {
    (0..rotary_dim / 2).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / rotary_dim as f32)).collect()
}

/// `cos`, `sin [r/2]` of the angles `position · inv_freq` (f32), times `attention_scaling`
/// (1 except for YaRN), rounded to bf16 when `round_bf16` (transformers casts them to the
/// activation dtype).
pub fn cos_sin(position: usize, inv_freq: &[f32], attention_scaling: f32, round_bf16: bool, cos: &mut [f32], sin: &mut [f32]) {
    assert!(cos.len() == inv_freq.len() && sin.len() == inv_freq.len());
    for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let (sv, cv) = (position as f32 * f).sin_cos();
        (*c, *s) = (cv * attention_scaling, sv * attention_scaling);
        if round_bf16 {
            (*c, *s) = (bf16r(*c), bf16r(*s));
        }
    }
}

/// Rotates every head of `x` (rows of `head_dim`) by the angles whose `cos`, `sin` are given:
/// `x'_i = x_i cos − x_{i+r/2} sin`, `x'_{i+r/2} = x_{i+r/2} cos + x_i sin`; channels from
/// `2·cos.len()` on are unchanged. With `round_bf16`, each product and each sum is rounded to
/// bf16, as torch computes `q·cos + rotate_half(q)·sin` on bf16 tensors.
pub fn rotate(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], round_bf16: bool) {
    let half = cos.len();
    assert!(2 * half <= head_dim && x.len().is_multiple_of(head_dim) && sin.len() == half);
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = (head[i], head[i + half]);
            if round_bf16 {
                head[i] = bf16r(bf16r(a * cos[i]) + bf16r(-b * sin[i]));
                head[i + half] = bf16r(bf16r(b * cos[i]) + bf16r(a * sin[i]));
            } else {
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = b * cos[i] + a * sin[i];
            }
        }
    }
}

/// [`rotate`] in f32 at `position`, unscaled.
pub fn apply_rope(x: &mut [f32], head_dim: usize, position: usize, inv_freq: &[f32]) {
    let (mut cos, mut sin) = (vec![0f32; inv_freq.len()], vec![0f32; inv_freq.len()]);
    cos_sin(position, inv_freq, 1.0, false, &mut cos, &mut sin);
    rotate(x, head_dim, &cos, &sin, false);
}

fn bf16r(v: f32) -> f32 {
    rio_core::bf16::from_f32(v).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_matches_float64_and_keeps_the_tail() {
        let (head_dim, rotary, theta, pos) = (12, 8, 1e4, 37);
        let x: Vec<f32> = (0..2 * head_dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = x.clone();
        apply_rope(&mut y, head_dim, pos, &inv_freq(theta, rotary));
        for h in 0..2 {
            let b = h * head_dim;
            for i in 0..rotary / 2 {
                let ang = pos as f64 * theta.powf(-(2.0 * i as f64) / rotary as f64);
                let (s, c) = ang.sin_cos();
                let (x0, x1) = (x[b + i] as f64, x[b + i + rotary / 2] as f64);
                assert!((y[b + i] as f64 - (x0 * c - x1 * s)).abs() < 1e-5);
                assert!((y[b + i + rotary / 2] as f64 - (x1 * c + x0 * s)).abs() < 1e-5);
            }
            assert_eq!(&y[b + rotary..b + head_dim], &x[b + rotary..b + head_dim]);
        }
    }
}
