//! Causal grouped-query attention of new queries over a key/value cache (spec 2.1 step 5).

use rayon::prelude::*;

use rio_core::bf16;

/// `q [T, n_h, d]` are the queries of positions `past..past+T`; `keys`, `values [L, n_kv, d]`
/// hold positions `0..L` with `L = past + T` (the new tokens already appended). Query head h
/// reads KV head `h / (n_h / n_kv)`. Writes `out [T, n_h, d]`. Every (token, head) pair is a task
/// on the worker pool.
///
/// Scores `q·k / √d` and the softmax are f32. With `bf16`, as torch's CPU flash attention
/// computes bf16 SDPA, the unnormalised probabilities are rounded to bf16 before they weight the
/// values (their sum stays f32), and the output is rounded to bf16.
#[allow(clippy::too_many_arguments)]
pub fn causal_gqa(q: &[f32], keys: &[f32], values: &[f32], n_h: usize, n_kv: usize, d: usize, bf16_probs: bool, out: &mut [f32]) {
    let t = q.len() / (n_h * d);
    let l = keys.len() / (n_kv * d);
    assert!(l >= t && values.len() == keys.len() && out.len() == q.len() && n_h.is_multiple_of(n_kv));
    let past = l - t;
    let group = n_h / n_kv;
    let scale = 1.0 / (d as f32).sqrt();
    let one = |task: usize, oh: &mut [f32], scores: &mut Vec<f32>| {
        let (s, h) = (task / n_h, task % n_h);
        let visible = past + s + 1;
        let kv = h / group;
        let qh = &q[task * d..][..d];
        scores.resize(visible, 0.0);
        let mut max = f32::NEG_INFINITY;
        for (j, sc) in scores.iter_mut().enumerate() {
            let kj = &keys[(j * n_kv + kv) * d..][..d];
            *sc = dot(qh, kj) * scale;
            max = max.max(*sc);
        }
        let mut sum = 0f32;
        for sc in scores.iter_mut() {
            let p = (*sc - max).exp();
            sum += p;
            *sc = if bf16_probs { bf16::from_f32(p).to_f32() } else { p };
        }
        oh.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            let vj = &values[(j * n_kv + kv) * d..][..d];
            for (o, &v) in oh.iter_mut().zip(vj) {
                *o += p * v;
            }
        }
        let inv = 1.0 / sum;
        for o in oh.iter_mut() {
            *o = if bf16_probs { bf16::from_f32(*o * inv).to_f32() } else { *o * inv };
        }
    };
    if t >= GEMM_MIN_ROWS {
        return blocked(q, keys, values, (n_h, n_kv, d), bf16_probs, out);
    }
    // One small query (a decode step of a short context) is not worth waking the pool.
    if t * n_h * l * d < 1 << 15 {
        let mut scores = Vec::new();
        out.chunks_exact_mut(d).enumerate().for_each(|(task, oh)| one(task, oh, &mut scores));
        return;
    }
    crate::threads::pool().install(|| {
        out.par_chunks_exact_mut(d).enumerate().for_each_init(|| Vec::with_capacity(l), |scores, (task, oh)| one(task, oh, scores))
    });
}

/// From this many new queries on (prefill), each head runs as GEMMs over blocks of queries.
const GEMM_MIN_ROWS: usize = 16;
/// Queries per block: bounds the probability block at `QUERY_BLOCK × L` floats per task.
const QUERY_BLOCK: usize = 128;

/// [`causal_gqa`] for many queries: per (head, block of queries) task, the scores are one GEMM
/// `Q Kᵀ`, the masked softmax runs over rows, and the output is one GEMM `P V`.
fn blocked(q: &[f32], keys: &[f32], values: &[f32], (n_h, n_kv, d): (usize, usize, usize), bf16_probs: bool, out: &mut [f32]) {
    use crate::gemm::{matmul_nt_f32_outer, MatRef, SyncPtr};
    let t = q.len() / (n_h * d);
    let l = keys.len() / (n_kv * d);
    let past = l - t;
    let group = n_h / n_kv;
    let scale = 1.0 / (d as f32).sqrt();
    let isa = crate::features::active_isa();
    // Vᵀ per KV head, [d, L], so that P V is a product with rows of Vᵀ.
    let vt: Vec<Vec<f32>> = (0..n_kv)
        .map(|kv| {
            let mut m = vec![0f32; d * l];
            for j in 0..l {
                for (c, &x) in values[(j * n_kv + kv) * d..][..d].iter().enumerate() {
                    m[c * l + j] = x;
                }
            }
            m
        })
        .collect();
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let blocks = t.div_ceil(QUERY_BLOCK);
    crate::threads::pool().install(|| {
        (0..n_h * blocks).into_par_iter().for_each(|task| {
            let (h, first) = (task / blocks, (task % blocks) * QUERY_BLOCK);
            let rows = QUERY_BLOCK.min(t - first);
            let kv = h / group;
            // Only keys some query of the block can see.
            let visible = past + first + rows;
            let qm = MatRef::from_slice_strided(&q[(first * n_h + h) * d..], rows, d, n_h * d);
            let km = MatRef::from_slice_strided(&keys[kv * d..], visible, d, n_kv * d);
            let mut p = vec![0f32; rows * visible];
            matmul_nt_f32_outer(isa, qm, km, &mut p, visible);
            let mut sums = vec![0f32; rows];
            for (r, (row, sum)) in p.chunks_exact_mut(visible).zip(sums.iter_mut()).enumerate() {
                let seen = past + first + r + 1;
                let max = row[..seen].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
                for x in row[..seen].iter_mut() {
                    let e = (*x * scale - max).exp();
                    *sum += e;
                    *x = if bf16_probs { bf16::from_f32(e).to_f32() } else { e };
                }
                row[seen..].fill(0.0);
            }
            let mut o = vec![0f32; rows * d];
            let vm = MatRef::from_slice_strided(&vt[kv], d, visible, l);
            matmul_nt_f32_outer(isa, MatRef::from_slice(&p, rows, visible), vm, &mut o, d);
            for (r, (orow, sum)) in o.chunks_exact(d).zip(&sums).enumerate() {
                let inv = 1.0 / sum;
                // SAFETY: task (h, block) writes only rows first..first+rows of head h.
                let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(((first + r) * n_h + h) * d), d) };
                for (o, &x) in dst.iter_mut().zip(orow) {
                    *o = if bf16_probs { bf16::from_f32(x * inv).to_f32() } else { x * inv };
                }
            }
        })
    });
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums, so the loop vectorises without reassociating one long chain.
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_float64_softmax_attention_with_a_causal_mask() {
        // A few queries on the calling thread, a decode step on the pool, then prefills run as
        // GEMMs (one query block, then three).
        for (n_h, n_kv, d, past, t) in [(4, 2, 8, 3, 5), (4, 2, 64, 300, 1), (4, 2, 64, 2, 70), (2, 1, 16, 3, 300)] {
            check_against_float64(n_h, n_kv, d, past, t);
        }
    }

    fn check_against_float64(n_h: usize, n_kv: usize, d: usize, past: usize, t: usize) {
        let l = past + t;
        let gen = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| (((i + seed) * 7919) % 113) as f32 / 56.0 - 1.0).collect() };
        let (q, k, v) = (gen(t * n_h * d, 1), gen(l * n_kv * d, 2), gen(l * n_kv * d, 3));
        let mut out = vec![0f32; q.len()];
        causal_gqa(&q, &k, &v, n_h, n_kv, d, false, &mut out);
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
