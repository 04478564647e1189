//! Router (spec section 5): `logits = x · Wgᵀ` in the model dtype, softmax over all experts in
//! fp32, top-k, renormalise the k weights.
use rio_core::moe::{check_route_args, RouterConfig, Routing};
use rio_core::{bf16, f16, DType, Error, Result, TensorRef};

use super::{check_top_k, compute_dtype, rows};
use crate::gemm::{self, MatRef};
use crate::scratch::Scratch;

/// Routes every row of `x [T, H]` through `router [E, H]`.
pub fn route(x: &TensorRef<'_>, router: &TensorRef<'_>, config: RouterConfig) -> Result<Routing> {
    let (_, e) = check_route_args(x, router, config)?;
    let t = x.shape()[0];
    let (mut bf16_rows, mut f32_rows) = (Scratch::stale(0), Scratch::stale(0));
    let xm = match compute_dtype(router.dtype()) {
        DType::BF16 => rows::in_dtype::<bf16>(x, &mut bf16_rows)?,
        _ => rows::in_dtype::<f32>(x, &mut f32_rows)?,
    };
    let mut logits = Scratch::<f32>::stale(t * e);
    let w = MatRef::from_tensor(router, "router_weight")?;
    crate::threads::pool().install(|| gemm::matmul_nt(xm, w, &mut logits, e));
    // transformers computes the router linear in the model dtype before the fp32 softmax.
    round_to(&mut logits, x.dtype());
    select_experts(&logits, e, config)
}

pub(crate) fn round_to(values: &mut [f32], dtype: DType) {
    match dtype {
        DType::BF16 => values.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32()),
        DType::F16 => values.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32()),
        _ => {}
    }
}

/// Softmax in fp32 over each row of `logits [T, E]`, then the top-k experts per row (ties go to
/// the lower expert index), renormalised when asked. Non-finite logits are an error.
pub fn select_experts(logits: &[f32], num_experts: usize, config: RouterConfig) -> Result<Routing> {
    check_top_k(config.top_k, num_experts)?;
    let k = config.top_k;
    let t = logits.len() / num_experts;
    let mut experts = Vec::with_capacity(t * k);
    let mut weights = Vec::with_capacity(t * k);
    let mut probs = vec![0f32; num_experts];
    let mut index: Vec<u32> = Vec::with_capacity(num_experts);
    for (tok, row) in logits.chunks_exact(num_experts).enumerate() {
        if let Some(bad) = row.iter().position(|v| !v.is_finite()) {
            return Err(Error::value(
                "x",
                format!("router logit for token {tok}, expert {bad} is {} (NaN or Inf in x or router_weight)", row[bad]),
            ));
        }
        softmax(row, &mut probs);
        index.clear();
        index.extend(0..num_experts as u32);
        let by_prob = |a: &u32, b: &u32| probs[*b as usize].total_cmp(&probs[*a as usize]).then(a.cmp(b));
        if k < num_experts {
            index.select_nth_unstable_by(k - 1, by_prob);
        }
        index[..k].sort_unstable_by(by_prob);
        let sum: f32 = index[..k].iter().map(|&i| probs[i as usize]).sum();
        let scale = if config.renormalize { 1.0 / sum } else { 1.0 };
        for &i in &index[..k] {
            experts.push(i);
            weights.push(probs[i as usize] * scale);
        }
    }
    Ok(Routing { top_k: k, experts, weights })
}

fn softmax(row: &[f32], probs: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (p, &v) in probs.iter_mut().zip(row) {
        *p = (v - max).exp();
        sum += *p;
    }
    let inv = 1.0 / sum;
    probs.iter_mut().for_each(|p| *p *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(top_k: usize, renormalize: bool) -> RouterConfig {
        RouterConfig { top_k, renormalize }
    }

    #[test]
    fn picks_largest_and_renormalises() {
        let logits = [0.0f32, 2.0, 1.0, -1.0];
        let r = select_experts(&logits, 4, cfg(2, true)).unwrap();
        assert_eq!(r.experts, vec![1, 2]);
        let (a, b) = (2f64.exp(), 1f64.exp());
        assert!((r.weights[0] as f64 - a / (a + b)).abs() < 1e-6);
        assert!((r.weights[1] as f64 - b / (a + b)).abs() < 1e-6);
    }

    #[test]
    fn without_renormalisation_weights_are_softmax_probabilities() {
        let logits = [0.0f32, 2.0, 1.0, -1.0];
        let r = select_experts(&logits, 4, cfg(2, false)).unwrap();
        let z: f64 = logits.iter().map(|&v| (v as f64).exp()).sum();
        assert!((r.weights[0] as f64 - 2f64.exp() / z).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let r = select_experts(&[1.0f32; 6], 6, cfg(3, true)).unwrap();
        assert_eq!(r.experts, vec![0, 1, 2]);
    }

    #[test]
    fn nan_logits_name_the_token() {
        let err = select_experts(&[0.0, 1.0, f32::NAN, 0.0], 2, cfg(1, true)).unwrap_err().to_string();
        assert!(err.contains("token 1") && err.contains("NaN"), "{err}");
    }

    #[test]
    fn k_out_of_range_is_rejected() {
        assert!(select_experts(&[0.0; 4], 4, cfg(5, true)).is_err());
        assert!(select_experts(&[0.0; 4], 4, cfg(0, true)).is_err());
    }
}
