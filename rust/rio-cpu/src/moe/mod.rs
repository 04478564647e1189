//! The sparse MoE block on CPU (spec section 5), one step per module:
//! `router` (softmax, top-k, renormalise) → `dispatch` (counting sort by expert, gather) →
//! `experts` (grouped GEMM gate/up + SwiGLU, grouped GEMM down) → `combine` (weighted
//! scatter-add back to token order, plus the gated shared expert). Up to `decode::MAX_TOKENS`
//! tokens, `decode` runs all of them as one parallel region instead (see there).
pub mod combine;
mod decode;
pub mod dispatch;
pub mod experts;
pub mod router;
pub mod rows;
#[cfg(target_arch = "x86_64")]
mod swiglu_tile;

pub use rio_core::moe::check_top_k;
use rio_core::moe::{Dispatch, MoeWeights, RouterConfig, Routing};
use rio_core::{bf16, DType, Element, Result, TensorMut, TensorRef};

use crate::gemm::MatRef;
use crate::scratch::{Plain, Scratch};
use rows::RowElement;

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

    let mut acc = Scratch::<f32>::zeroed(t * h);
    if (1..=decode::MAX_TOKENS).contains(&t) {
        match compute_dtype(weights.dtype()) {
            DType::BF16 => decode::forward::<bf16>(x, weights, config, &mut acc)?,
            _ => decode::forward::<f32>(x, weights, config, &mut acc)?,
        }
        return rows::store(&acc, out);
    }
    let routing = router::route(x, &weights.router, config)?;
    let dispatch = dispatch::dispatch(&routing, e)?;
    match compute_dtype(weights.dtype()) {
        DType::BF16 => add_experts::<bf16>(x, weights, &routing, &dispatch, &mut acc)?,
        _ => add_experts::<f32>(x, weights, &routing, &dispatch, &mut acc)?,
    }
    rows::store(&acc, out)
}

/// `acc += ` the routed and shared experts of `x`, with activations in `T`.
fn add_experts<T: RowElement + Element + Plain + Send>(
    x: &TensorRef<'_>,
    weights: &MoeWeights<'_>,
    routing: &Routing,
    dispatch: &Dispatch,
    acc: &mut [f32],
) -> Result<()> {
    let isa = crate::features::active_isa();
    let src = MatRef::from_tensor(x, "x")?;
    if !routing.experts.is_empty() {
        let (h, rows, offsets) = (src.cols, routing.experts.len(), &dispatch.offsets);
        let mut xs = Scratch::<T>::stale(rows * h);
        let direct = (T::DTYPE == DType::BF16 && experts::packs_direct(isa, src, &weights.experts)).then_some(experts::Direct {
            source: src,
            order: &dispatch.order,
            per_row: routing.top_k,
        });
        match direct {
            // Only the experts off the tile path read gathered rows.
            Some(_) => {
                for (e, m) in weights.experts.iter().enumerate() {
                    let (first, end) = (offsets[e] as usize, offsets[e + 1] as usize);
                    if !experts::uses_tiles(isa, DType::BF16, m.gate.dtype(), end - first) {
                        rows::gather_into(src, Some(&dispatch.order[first..end]), routing.top_k, &mut xs[first * h..end * h]);
                    }
                }
            }
            None => rows::gather_into(src, Some(&dispatch.order), routing.top_k, &mut xs),
        }
        let targets = combine::RowTargets::routed(routing, dispatch);
        let xm = MatRef::from_slice(&xs, rows, h);
        experts::swiglu_experts_rows(isa, xm, direct, &weights.experts, offsets, &targets, acc);
    }
    if let Some(shared) = &weights.shared {
        let mut buf = Scratch::<T>::stale(0);
        let xs = rows::in_dtype(x, &mut buf)?;
        let gate = match &shared.gate_weight {
            Some(g) => Some(combine::sigmoid_gate_rows(xs, g)?),
            None => None,
        };
        let targets = combine::RowTargets::per_token(src.rows, gate);
        experts::swiglu_experts_rows(isa, xs, None, std::slice::from_ref(&shared.mats), &[0, src.rows as u32], &targets, acc);
    }
    Ok(())
}

#[cfg(test)]
mod forward_tests;
