//! Causal grouped-query attention of new queries over a key/value cache (spec 2.1 step 5).

/// `q [T, n_h, d]` are the queries of positions `past..past+T`; `keys`, `values [L, n_kv, d]`
/// hold positions `0..L` with `L = past + T` (the new tokens already appended). Query head h
/// reads KV head `h / (n_h / n_kv)`. Writes `out [T, n_h, d]`.
pub fn causal_gqa(q: &[f32], keys: &[f32], values: &[f32], n_h: usize, n_kv: usize, d: usize, out: &mut [f32]) {
    let t = q.len() / (n_h * d);
    let l = keys.len() / (n_kv * d);
    assert!(l >= t && values.len() == keys.len() && out.len() == q.len() && n_h.is_multiple_of(n_kv));
    let past = l - t;
    let group = n_h / n_kv;
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0f32; l];
    for s in 0..t {
        let visible = past + s + 1;
        for h in 0..n_h {
            let kv = h / group;
            let qh = &q[(s * n_h + h) * d..][..d];
            let mut max = f32::NEG_INFINITY;
            for (j, sc) in scores[..visible].iter_mut().enumerate() {
                let kj = &keys[(j * n_kv + kv) * d..][..d];
                *sc = qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                max = max.max(*sc);
            }
            let mut sum = 0f32;
            for sc in &mut scores[..visible] {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            let oh = &mut out[(s * n_h + h) * d..][..d];
            oh.fill(0.0);
            for (j, &p) in scores[..visible].iter().enumerate() {
                let vj = &values[(j * n_kv + kv) * d..][..d];
                for (o, &v) in oh.iter_mut().zip(vj) {
                    *o += p / sum * v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_float64_softmax_attention_with_a_causal_mask() {
        let (n_h, n_kv, d, past, t) = (4, 2, 8, 3, 5);
        let l = past + t;
        let gen = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| (((i + seed) * 7919) % 113) as f32 / 56.0 - 1.0).collect() };
        let (q, k, v) = (gen(t * n_h * d, 1), gen(l * n_kv * d, 2), gen(l * n_kv * d, 3));
        let mut out = vec![0f32; q.len()];
        causal_gqa(&q, &k, &v, n_h, n_kv, d, &mut out);
        for s in 0..t {
            for h in 0..n_h {
                let kv = h / (n_h / n_kv);
                let logits: Vec<f64> = (0..=past + s)
                    .map(|j| {
                        (0..d).map(|c| q[(s * n_h + h) * d + c] as f64 * k[(j * n_kv + kv) * d + c] as f64).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let m = logits.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = logits.iter().map(|x| (x - m).exp()).sum();
                for c in 0..d {
                    let want: f64 = logits.iter().enumerate().map(|(j, x)| (x - m).exp() / z * v[(j * n_kv + kv) * d + c] as f64).sum();
                    assert!((out[(s * n_h + h) * d + c] as f64 - want).abs() < 1e-5);
                }
            }
        }
    }
}
