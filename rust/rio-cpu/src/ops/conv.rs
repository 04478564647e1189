//! Causal depthwise conv1d + SiLU over time (spec 3.1 step 2), carrying the last `K-1` raw inputs
//! between calls so that prefill and token-by-token decode give the same outputs.

/// `out[t,c] = silu(Σ_j w[c,j] · in_{t-K+1+j}[c])` for `x [T, C]`, `w [C, K]`. `history [K-1, C]`
/// holds the raw inputs before `x` (zeros at the start of a sequence, oldest first) and is
/// replaced by the last `K-1` raw inputs seen. With `round_bf16` the conv output and the SiLU
/// output are each rounded to bf16 (transformers' bf16 conv accumulates in f32).
pub fn causal_conv1d_silu(x: &[f32], w: &[f32], kernel: usize, history: &mut [f32], round_bf16: bool, out: &mut [f32]) {
    let channels = history.len() / (kernel - 1).max(1);
    assert!(kernel >= 1 && w.len() == channels * kernel && x.len().is_multiple_of(channels.max(1)) && out.len() == x.len());
    assert_eq!(history.len(), (kernel - 1) * channels);
    let t = x.len() / channels.max(1);
    let mut ext = Vec::with_capacity(history.len() + x.len());
    ext.extend_from_slice(history);
    ext.extend_from_slice(x);
    // Taps by position `[K, C]`, so each step runs over contiguous channels.
    let mut taps = vec![0f32; kernel * channels];
    for (c, wc) in w.chunks_exact(kernel).enumerate() {
        for (j, &wj) in wc.iter().enumerate() {
            taps[j * channels + c] = wj;
        }
    }
    for s in 0..t {
        let o = &mut out[s * channels..(s + 1) * channels];
        o.fill(0.0);
        for j in 0..kernel {
            let src = &ext[(s + j) * channels..(s + j + 1) * channels];
            for ((oc, &xc), &wc) in o.iter_mut().zip(src).zip(&taps[j * channels..(j + 1) * channels]) {
                *oc += wc * xc;
            }
        }
        for oc in o.iter_mut() {
            *oc = if round_bf16 { bf16r(super::silu(bf16r(*oc))) } else { super::silu(*oc) };
        }
    }
    history.copy_from_slice(&ext[t * channels..]);
}

fn bf16r(v: f32) -> f32 {
    rio_core::bf16::from_f32(v).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_float64_and_steps_equal_one_call() {
        let (c, k, t) = (5, 4, 9);
        let x: Vec<f32> = (0..t * c).map(|i| ((i * 7919) % 97) as f32 / 48.0 - 1.0).collect();
        let w: Vec<f32> = (0..c * k).map(|i| ((i * 104729) % 89) as f32 / 44.0 - 1.0).collect();
        let mut hist = vec![0.0; (k - 1) * c];
        let mut all = vec![0.0; t * c];
        causal_conv1d_silu(&x, &w, k, &mut hist, false, &mut all);
        for s in 0..t {
            for ch in 0..c {
                let mut acc = 0f64;
                for j in 0..k {
                    let src = s as isize - (k as isize - 1) + j as isize;
                    if src >= 0 {
                        acc += w[ch * k + j] as f64 * x[src as usize * c + ch] as f64;
                    }
                }
                let want = acc / (1.0 + (-acc).exp());
                assert!((all[s * c + ch] as f64 - want).abs() < 1e-5);
            }
        }
        // 2 tokens, then one at a time: the carried history makes them equal.
        let mut hist2 = vec![0.0; (k - 1) * c];
        let mut stepped = vec![0.0; t * c];
        causal_conv1d_silu(&x[..2 * c], &w, k, &mut hist2, false, &mut stepped[..2 * c]);
        for s in 2..t {
            causal_conv1d_silu(&x[s * c..(s + 1) * c], &w, k, &mut hist2, false, &mut stepped[s * c..(s + 1) * c]);
        }
        assert_eq!(all, stepped);
        assert_eq!(hist, hist2);
    }
}
