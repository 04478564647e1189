//! The gated delta rule of Gated DeltaNet (spec 3.1 step 7), one value head, state in f32.
//!
//! `S ← α S;  S ← S + k ⊗ β(v − Sᵀk);  o = Sᵀq` with `S [d_k, d_v]` row-major. This recurrence
//! is exact for prefill as well (spec 3.2: the chunked form equals it up to rounding).

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
}
