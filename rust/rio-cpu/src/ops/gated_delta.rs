//! The gated delta rule of Gated DeltaNet (spec 3.1 step 7), one value head, state in f32.
//!
//! `S ← α S;  S ← S + k ⊗ β(v − Sᵀk);  o = Sᵀq` with `S [d_k, d_v]` row-major, α = e^g.
//! [`gated_delta_step`] runs it for one token (decode); [`gated_delta_chunked`] runs a sequence
//! in chunks of [`CHUNK`] tokens (prefill, spec 3.2), which equals the recurrence up to rounding.

use crate::gemm::{matmul_nt_f32_outer, MatRef};

/// Tokens per chunk, as in transformers' `torch_chunk_gated_delta_rule`.
pub const CHUNK: usize = 64;

/// Every value head of one layer over T tokens, heads as tasks on the worker pool.
///
/// `q`, `k [T, n_k, d_k]` (L2-normalised, q scaled), `v [T, n_v, d_v]`, log-decays `g` and
/// `beta [T, n_v]`; value head j reads key head `j / (n_v / n_k)`. Updates `state [n_v, d_k, d_v]`
/// and writes `out [T, n_v, d_v]`. One token steps the recurrence, several run the chunked form
/// (spec 3.2), as transformers chooses.
#[allow(clippy::too_many_arguments)]
pub fn gated_delta_heads(
    state: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    n_k: usize,
    n_v: usize,
    out: &mut [f32],
) {
    use rayon::prelude::*;
    let t = g.len() / n_v;
    assert!(t > 0 && g.len() == t * n_v && beta.len() == g.len() && n_v.is_multiple_of(n_k) && out.len() == v.len());
    let (dk, dv) = (q.len() / (t * n_k), v.len() / (t * n_v));
    assert!(k.len() == q.len() && state.len() == n_v * dk * dv);
    let group = n_v / n_k;
    let head = |j: usize, state_j: &mut [f32]| -> Vec<f32> {
        let kh = j / group;
        let mut o = vec![0f32; t * dv];
        if t == 1 {
            let (qj, kj, vj) = (&q[kh * dk..][..dk], &k[kh * dk..][..dk], &v[j * dv..][..dv]);
            gated_delta_step(state_j, qj, kj, vj, g[j].exp(), beta[j], &mut o);
            return o;
        }
        let column = |x: &[f32], width: usize, stride: usize, at: usize| -> Vec<f32> {
            (0..t).flat_map(|s| &x[s * stride + at * width..][..width]).copied().collect()
        };
        let (qj, kj, vj) = (column(q, dk, n_k * dk, kh), column(k, dk, n_k * dk, kh), column(v, dv, n_v * dv, j));
        let gj: Vec<f32> = (0..t).map(|s| g[s * n_v + j]).collect();
        let bj: Vec<f32> = (0..t).map(|s| beta[s * n_v + j]).collect();
        gated_delta_chunked(state_j, &qj, &kj, &vj, &gj, &bj, &mut o);
        o
    };
    let per_head: Vec<Vec<f32>> =
        crate::threads::pool().install(|| state.par_chunks_exact_mut(dk * dv).enumerate().map(|(j, st)| head(j, st)).collect());
    for (j, o) in per_head.iter().enumerate() {
        for (s, row) in o.chunks_exact(dv).enumerate() {
            out[(s * n_v + j) * dv..][..dv].copy_from_slice(row);
        }
    }
}

/// One token: updates `state [d_k, d_v]` and writes `out [d_v]`.
pub fn gated_delta_step(state: &mut [f32], q: &[f32], k: &[f32], v: &[f32], alpha: f32, beta: f32, out: &mut [f32]) {
    let (dk, dv) = (k.len(), v.len());
    assert!(state.len() == dk * dv && q.len() == dk && out.len() == dv);
    state.iter_mut().for_each(|s| *s *= alpha);
    // delta = β (v − Sᵀk), accumulated in `out` to avoid an allocation.
    out.copy_from_slice(v);
    for (row, &ki) in state.chunks_exact(dv).zip(k) {
        for (o, &s) in out.iter_mut().zip(row) {
            *o -= s * ki;
        }
    }
    out.iter_mut().for_each(|o| *o *= beta);
    for (row, &ki) in state.chunks_exact_mut(dv).zip(k) {
        for (s, &d) in row.iter_mut().zip(out.iter()) {
            *s += ki * d;
        }
    }
    out.fill(0.0);
    for (row, &qi) in state.chunks_exact(dv).zip(q) {
        for (o, &s) in out.iter_mut().zip(row) {
            *o += s * qi;
        }
    }
}

/// T tokens of one value head: `q`, `k [T, d_k]` (q already scaled), `v [T, d_v]`, log-decays
/// `g [T]` (≤ 0) and `beta [T]`; updates `state [d_k, d_v]` and writes `out [T, d_v]`.
///
/// Per chunk, with γ the cumulative log-decay and `A_ts = β_t (k_t·k_s) e^(γ_t−γ_s)` for s < t:
/// `V'` solves `(I + A) V' = diag(β)(V − diag(e^γ) K S)` by forward substitution, then
/// `O_t = e^γ_t q_t S + Σ_{s≤t} (q_t·k_s) e^(γ_t−γ_s) V'_s` and
/// `S ← e^γ_C S + Σ_s e^(γ_C−γ_s) k_s ⊗ V'_s`. Every exponent is ≤ 0, so nothing overflows.
///
/// The products with the state and inside the chunk are small f32 GEMMs (`K Kᵀ`, `Q Kᵀ`, `K S`,
/// `Q S`, `(QKᵀ ⊙ Λ) V'`, `K̃ᵀ V'`) on the calling thread's SIMD kernels; only the forward
/// substitution is a loop of row updates.
pub fn gated_delta_chunked(state: &mut [f32], q: &[f32], k: &[f32], v: &[f32], g: &[f32], beta: &[f32], out: &mut [f32]) {
    // The row updates below are plain loops; compiled for AVX-512 they run 16 lanes wide (the
    // crate's baseline is plain x86-64). Lane-wise, so the results are the same either way.
    #[cfg(target_arch = "x86_64")]
    if crate::features::active_isa() >= crate::features::Isa::Avx512 {
        // SAFETY: the CPU has AVX-512F (run-time detection behind `active_isa`).
        return unsafe { gated_delta_chunked_avx512(state, q, k, v, g, beta, out) };
    }
    gated_delta_chunked_body(state, q, k, v, g, beta, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn gated_delta_chunked_avx512(state: &mut [f32], q: &[f32], k: &[f32], v: &[f32], g: &[f32], beta: &[f32], out: &mut [f32]) {
    gated_delta_chunked_body(state, q, k, v, g, beta, out)
}

#[inline(always)]
fn gated_delta_chunked_body(state: &mut [f32], q: &[f32], k: &[f32], v: &[f32], g: &[f32], beta: &[f32], out: &mut [f32]) {
    let t = g.len();
    let (dk, dv) = (k.len() / t.max(1), v.len() / t.max(1));
    assert!(beta.len() == t && q.len() == k.len() && k.len() == t * dk && out.len() == v.len() && state.len() == dk * dv);
    let isa = crate::features::active_isa();
    // `out[m, n] = Σ_c x[m, c] · w[n, c]` for row-major x [m, c], w [n, c].
    let mm = |x: &[f32], m: usize, w: &[f32], n: usize, c: usize, out: &mut [f32]| {
        matmul_nt_f32_outer(isa, MatRef::from_slice(x, m, c), MatRef::from_slice(w, n, c), out, n)
    };
    let transpose = |x: &[f32], rows: usize, cols: usize, out: &mut [f32]| {
        for (r, row) in x.chunks_exact(cols).take(rows).enumerate() {
            for (c, &val) in row.iter().enumerate() {
                out[c * rows + r] = val;
            }
        }
    };
    let mut gamma = vec![0f32; CHUNK];
    let (mut kk, mut qk) = (vec![0f32; CHUNK * CHUNK], vec![0f32; CHUNK * CHUNK]);
    let (mut ks, mut qs) = (vec![0f32; CHUNK * dv], vec![0f32; CHUNK * dv]);
    let (mut vp, mut vpt) = (vec![0f32; CHUNK * dv], vec![0f32; dv * CHUNK]);
    let (mut st, mut kw) = (vec![0f32; dv * dk], vec![0f32; dk * CHUNK]);
    let mut upd = vec![0f32; dk * dv];
    for start in (0..t).step_by(CHUNK) {
        let c = CHUNK.min(t - start);
        let (qc, kc) = (&q[start * dk..(start + c) * dk], &k[start * dk..(start + c) * dk]);
        let vc = &v[start * dv..(start + c) * dv];
        let mut acc = 0f32;
        for (gm, &gi) in gamma.iter_mut().zip(&g[start..start + c]) {
            acc += gi;
            *gm = acc;
        }
        // Sᵀ, so that products with S are x · (Sᵀ)ᵀ.
        transpose(state, dk, dv, &mut st);
        mm(kc, c, kc, c, dk, &mut kk[..c * c]);
        mm(qc, c, kc, c, dk, &mut qk[..c * c]);
        mm(kc, c, &st, dv, dk, &mut ks[..c * dv]);
        mm(qc, c, &st, dv, dk, &mut qs[..c * dv]);
        // V' by forward substitution: V'_a = β_a (v_a − e^γ_a (K S)_a − Σ_{s<a} (k_a·k_s) e^(γ_a−γ_s) V'_s).
        for a in 0..c {
            let (done, rest) = vp.split_at_mut(a * dv);
            let row = &mut rest[..dv];
            let decay = gamma[a].exp();
            for ((r, &x), &p) in row.iter_mut().zip(&vc[a * dv..(a + 1) * dv]).zip(&ks[a * dv..(a + 1) * dv]) {
                *r = x - decay * p;
            }
            for s in 0..a {
                let coef = kk[a * c + s] * (gamma[a] - gamma[s]).exp();
                for (r, &p) in row.iter_mut().zip(&done[s * dv..(s + 1) * dv]) {
                    *r -= coef * p;
                }
            }
            let b_a = beta[start + a];
            row.iter_mut().for_each(|r| *r *= b_a);
        }
        // O = diag(e^γ) Q S + (QKᵀ ⊙ Λ) V', Λ causal with the diagonal.
        for a in 0..c {
            for s in 0..c {
                qk[a * c + s] = if s <= a { qk[a * c + s] * (gamma[a] - gamma[s]).exp() } else { 0.0 };
            }
        }
        transpose(&vp[..c * dv], c, dv, &mut vpt[..dv * c]);
        let oc = &mut out[start * dv..(start + c) * dv];
        mm(&qk[..c * c], c, &vpt[..dv * c], dv, c, oc);
        for (a, (o, p)) in oc.chunks_exact_mut(dv).zip(qs.chunks_exact(dv)).enumerate() {
            let decay = gamma[a].exp();
            o.iter_mut().zip(p).for_each(|(o, &p)| *o += decay * p);
        }
        // S ← e^γ_C S + K̃ᵀ V' with K̃_s = e^(γ_C−γ_s) k_s: upd [dk, dv] = (K̃ᵀ) · (V'ᵀ)ᵀ.
        let total = gamma[c - 1];
        for (s, krow) in kc.chunks_exact(dk).enumerate() {
            let w = (total - gamma[s]).exp();
            for (i, &kv) in krow.iter().enumerate() {
                kw[i * c + s] = w * kv;
            }
        }
        mm(&kw[..dk * c], dk, &vpt[..dv * c], dv, c, &mut upd);
        let carry = total.exp();
        state.iter_mut().zip(&upd).for_each(|(s, &u)| *s = carry * *s + u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed form `S_t = α(I − β k kᵀ) S + β k vᵀ`, `o = Sᵀ q`, in f64.
    fn step_f64(s: &mut [f64], q: &[f32], k: &[f32], v: &[f32], alpha: f64, beta: f64) -> Vec<f64> {
        let (dk, dv) = (k.len(), v.len());
        let mut next = vec![0f64; dk * dv];
        for i in 0..dk {
            for j in 0..dv {
                let proj: f64 = (0..dk).map(|m| k[i] as f64 * k[m] as f64 * s[m * dv + j]).sum();
                next[i * dv + j] = alpha * (s[i * dv + j] - beta * proj) + beta * k[i] as f64 * v[j] as f64;
            }
        }
        s.copy_from_slice(&next);
        (0..dv).map(|j| (0..dk).map(|i| s[i * dv + j] * q[i] as f64).sum()).collect()
    }

    #[test]
    fn steps_match_the_float64_closed_form() {
        let (dk, dv, t) = (6, 5, 20);
        let gen = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| (((i + seed) * 7919) % 101) as f32 / 50.0 - 1.0).collect() };
        let mut s = vec![0f32; dk * dv];
        let mut s64 = vec![0f64; dk * dv];
        for step in 0..t {
            let (q, mut k, v) = (gen(dk, step), gen(dk, 31 + step), gen(dv, 77 + step));
            let norm = k.iter().map(|x| x * x).sum::<f32>().sqrt();
            k.iter_mut().for_each(|x| *x /= norm);
            let (alpha, beta) = (0.6 + 0.02 * step as f32, 0.3 + 0.03 * step as f32);
            let mut out = vec![0f32; dv];
            gated_delta_step(&mut s, &q, &k, &v, alpha, beta, &mut out);
            let want = step_f64(&mut s64, &q, &k, &v, alpha as f64, beta as f64);
            for (a, b) in out.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-5, "step {step}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn chunked_sequences_equal_the_float64_recurrence_across_chunk_boundaries() {
        let (dk, dv) = (8, 5);
        for t in [1usize, 7, 64, 65, 150] {
            let gen = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| (((i + seed) * 7919) % 101) as f32 / 50.0 - 1.0).collect() };
            let q: Vec<f32> = gen(t * dk, 1).iter().map(|x| x * 0.35).collect();
            let mut k = gen(t * dk, 2);
            for row in k.chunks_exact_mut(dk) {
                let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                row.iter_mut().for_each(|x| *x /= n);
            }
            let v = gen(t * dv, 3);
            let g: Vec<f32> = gen(t, 4).iter().map(|x| -0.05 - 0.4 * (x + 1.0)).collect();
            let beta: Vec<f32> = gen(t, 5).iter().map(|x| 0.5 + 0.45 * x).collect();
            let mut state = gen(dk * dv, 6);
            let mut s64: Vec<f64> = state.iter().map(|&x| x as f64).collect();
            let mut out = vec![0f32; t * dv];
            gated_delta_chunked(&mut state, &q, &k, &v, &g, &beta, &mut out);
            for s in 0..t {
                let want = step_f64(
                    &mut s64,
                    &q[s * dk..(s + 1) * dk],
                    &k[s * dk..(s + 1) * dk],
                    &v[s * dv..(s + 1) * dv],
                    (g[s] as f64).exp(),
                    beta[s] as f64,
                );
                for (a, b) in out[s * dv..(s + 1) * dv].iter().zip(&want) {
                    assert!((*a as f64 - b).abs() < 2e-5, "T={t}, token {s}: {a} vs {b}");
                }
            }
            for (a, b) in state.iter().zip(&s64) {
                assert!((*a as f64 - b).abs() < 2e-5, "T={t}: final state {a} vs {b}");
            }
        }
    }
}
