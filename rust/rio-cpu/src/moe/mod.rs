//! The sparse MoE block on CPU (spec section 5), one step per module:
//! `router` (softmax, top-k, renormalise) → `dispatch` (counting sort by expert, gather) →
//! `experts` (grouped GEMM gate/up + SwiGLU, grouped GEMM down) → `combine` (weighted
//! scatter-add back to token order, plus the gated shared expert).
pub mod combine;
pub mod dispatch;
pub mod experts;
pub mod router;
pub mod rows;

use rio_core::moe::{MoeWeights, RouterConfig};
use rio_core::{DType, Error, Result, TensorMut, TensorRef};

/// The dtype activations are converted to before a GEMM against weights of `weight_dtype`:
/// bf16 weights multiply bf16 activations (as transformers does in bf16), the rest use f32.
pub fn compute_dtype(weight_dtype: DType) -> DType {
    if weight_dtype == DType::BF16 {
        DType::BF16
    } else {
        DType::F32
    }
}

/// `out [T, H] = MoE(x [T, H])`. `out` must be contiguous and of a float dtype.
pub fn forward(x: &TensorRef<'_>, weights: &MoeWeights<'_>, config: RouterConfig, out: &mut TensorMut<'_>) -> Result<()> {
    let (h, e) = (weights.hidden(), weights.num_experts());
    x.expect_dtype("x", &[DType::BF16, DType::F16, DType::F32])?;
    x.expect_shape("x", &[None, Some(h)], "(T, H)")?;
    let t = x.shape()[0];
    rows::expect_output(out, "out", &[t, h])?;

    let routing = router::route(x, &weights.router, config)?;
    let dispatch = dispatch::dispatch(&routing, e)?;
    let compute = compute_dtype(weights.dtype());

    let mut acc = vec![0f32; t * h];
    if !routing.experts.is_empty() {
        let xs = rows::gather(x, Some(&dispatch.order), routing.top_k, compute)?;
        let targets = combine::RowTargets::routed(&routing, &dispatch);
        experts::swiglu_experts(&xs, &weights.experts, &dispatch.offsets, &targets, &mut acc);
    }
    if let Some(shared) = &weights.shared {
        let xs = rows::gather(x, None, 1, compute)?;
        let gate = match &shared.gate_weight {
            Some(g) => Some(combine::sigmoid_gate(&xs, g)?),
            None => None,
        };
        let targets = combine::RowTargets::per_token(t, gate);
        experts::swiglu_experts(&xs, std::slice::from_ref(&shared.mats), &[0, t as u32], &targets, &mut acc);
    }
    rows::store(&acc, out)
}

/// Checks `top_k` against the number of experts.
pub fn check_top_k(top_k: usize, num_experts: usize) -> Result<()> {
    if top_k == 0 || top_k > num_experts {
        return Err(Error::value("top_k", format!("must be in 1..={num_experts} (the number of experts), got {top_k}")));
    }
    Ok(())
}

#[cfg(test)]
mod forward_tests;
