//! Combine: the weighted scatter-add of expert outputs back to token order, and the shared
//! expert with its scalar sigmoid gate.
use rayon::prelude::*;
use rio_core::moe::{Dispatch, Routing};
use rio_core::{Result, Tensor, TensorRef};

use crate::gemm::{self, MatRef};

/// `out[t] += Σ_j weights[t, j] · ys[position[t·k + j]]` for every token t.
pub fn combine(ys: &[f32], routing: &Routing, dispatch: &Dispatch, hidden: usize, out: &mut [f32]) {
    let k = routing.top_k;
    crate::threads::pool().install(|| {
        out.par_chunks_mut(hidden.max(1)).enumerate().for_each(|(t, row)| {
            for j in 0..k {
                let slot = t * k + j;
                let w = routing.weights[slot];
                let y = &ys[dispatch.position[slot] as usize * hidden..][..hidden];
                row.iter_mut().zip(y).for_each(|(o, &v)| *o += w * v);
            }
        })
    });
}

/// `sigmoid(x_t · w_sg)` for every token of `xs [T, H]`; `gate_weight [1, H]`.
pub fn sigmoid_gate(xs: &Tensor, gate_weight: &TensorRef<'_>) -> Result<Vec<f32>> {
    sigmoid_gate_rows(MatRef::from_tensor(&xs.view(), "x")?, gate_weight)
}

/// [`sigmoid_gate`] on rows `x` in any buffer.
pub(crate) fn sigmoid_gate_rows(x: MatRef<'_>, gate_weight: &TensorRef<'_>) -> Result<Vec<f32>> {
    let mut logits = vec![0f32; x.rows];
    let w = MatRef::from_tensor(gate_weight, "shared_expert_gate")?;
    gemm::matmul_nt(x, w, &mut logits, 1);
    Ok(logits.into_iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect())
}

/// Where each row of an expert block goes: `acc[token[r]] += weight[r] · y[r]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowTargets {
    pub token: Vec<u32>,
    pub weight: Vec<f32>,
}

impl RowTargets {
    /// Sorted position p holds slot `order[p]`: token `order[p] / k`, routing weight of that slot.
    pub fn routed(routing: &Routing, dispatch: &Dispatch) -> RowTargets {
        let k = routing.top_k as u32;
        RowTargets {
            token: dispatch.order.iter().map(|&slot| slot / k).collect(),
            weight: dispatch.order.iter().map(|&slot| routing.weights[slot as usize]).collect(),
        }
    }

    /// Row t is token t, scaled by `gate[t]` (1 when absent): the shared expert.
    pub fn per_token(tokens: usize, gate: Option<Vec<f32>>) -> RowTargets {
        RowTargets { token: (0..tokens as u32).collect(), weight: gate.unwrap_or_else(|| vec![1.0; tokens]) }
    }
}
