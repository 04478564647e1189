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
    let t = xs.shape()[0];
    let mut logits = vec![0f32; t];
    let x = MatRef::from_tensor(&xs.view(), "x")?;
    let w = MatRef::from_tensor(gate_weight, "shared_expert_gate")?;
    gemm::matmul_nt(x, w, &mut logits, 1);
    Ok(logits.into_iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect())
}

/// `out[t] += gate[t] · ys[t]` (gate 1 when absent).
pub fn add_shared(ys: &[f32], gate: Option<&[f32]>, hidden: usize, out: &mut [f32]) {
    crate::threads::pool().install(|| {
        out.par_chunks_mut(hidden.max(1)).zip(ys.par_chunks(hidden.max(1))).enumerate().for_each(|(t, (o, y))| {
            let g = gate.map_or(1.0, |g| g[t]);
            o.iter_mut().zip(y).for_each(|(o, &v)| *o += g * v);
        })
    });
}
