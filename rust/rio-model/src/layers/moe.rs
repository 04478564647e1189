//! A sparse MoE block on the CPU backend's MoE pipeline (spec section 4), its weights read in
//! place: the router, the routed experts (either checkpoint layout) and an optional shared expert
//! with its sigmoid gate.
use rio_core::moe::{ExpertMats, MoeWeights, RouterConfig};
use rio_core::{bf16, Backend, DType, Result, TensorMut, TensorRef};
use rio_cpu::gemm::{matmul_nt, MatRef};
use rio_cpu::moe::{dispatch::dispatch, router::select_experts};
use rio_cpu::ops::{sigmoid, silu};
use rio_cpu::CpuBackend;

use super::weights::{Loader, MoeStore, Precision};

#[derive(Debug)]
pub struct MoeBlock {
    store: MoeStore,
    routing: RouterConfig,
    hidden: usize,
    precision: Precision,
}

impl MoeBlock {
    /// The block `{p}` of `dims` = (E, H, I), with a shared expert of `shared_intermediate` rows.
    pub fn load(
        w: &Loader,
        p: &str,
        dims: (usize, usize, usize),
        shared_intermediate: Option<usize>,
        routing: RouterConfig,
    ) -> Result<Self> {
        Ok(MoeBlock { store: w.moe(p, dims, shared_intermediate)?, routing, hidden: dims.1, precision: w.precision })
    }

    /// `x [T, H] → [T, H]`; in bf16 the block reads and writes bf16 rows (the router rounds its
    /// logits to bf16, the experts accumulate in f32 and round once).
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let h = self.hidden;
        let t = x.len() / h;
        let weights = self.store.weights();
        let mut out = vec![0f32; x.len()];
        match self.precision {
            // The MoE pipeline multiplies bf16/f16 weights by activations rounded to that dtype;
            // the f32 computation keeps them in f32.
            Precision::F32 if weights.dtype() != DType::F32 => f32_moe(x, weights, self.routing, &mut out)?,
            Precision::F32 => {
                let mut o = TensorMut::from_slice(&mut out, &[t, h])?;
                CpuBackend.moe_forward(&TensorRef::from_slice(x, &[t, h])?, weights, self.routing, &mut o)?
            }
            Precision::Bf16 => {
                let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
                let mut ob = vec![bf16::ZERO; x.len()];
                let mut o = TensorMut::from_slice(&mut ob, &[t, h])?;
                CpuBackend.moe_forward(&TensorRef::from_slice(&xb, &[t, h])?, weights, self.routing, &mut o)?;
                out.iter_mut().zip(&ob).for_each(|(o, v)| *o = v.to_f32());
            }
        }
        Ok(out)
    }
}

/// `out += Σ_k w_k · expert_k(x)` (+ the gated shared expert) with f32 activations over weights
/// of any dtype (the GEMM widens them): the exact f32 computation of a bf16 checkpoint.
fn f32_moe(x: &[f32], weights: &MoeWeights<'_>, routing: RouterConfig, out: &mut [f32]) -> Result<()> {
    let (h, e) = (weights.hidden(), weights.num_experts());
    let t = x.len() / h;
    let xm = MatRef::from_slice(x, t, h);
    let mut logits = vec![0f32; t * e];
    matmul_nt(xm, MatRef::from_tensor(&weights.router, "router")?, &mut logits, e);
    let route = select_experts(&logits, e, routing)?;
    let order = dispatch(&route, e)?;
    // Each expert's rows, gathered, through SwiGLU; weighted into `out` per (token, slot).
    let swiglu = |m: &ExpertMats<'_>, rows: &[f32], n: usize| -> Result<Vec<f32>> {
        let i = m.gate.shape()[0];
        let (mut gate, mut up, mut y) = (vec![0f32; n * i], vec![0f32; n * i], vec![0f32; n * h]);
        let rm = MatRef::from_slice(rows, n, h);
        matmul_nt(rm, MatRef::from_tensor(&m.gate, "gate")?, &mut gate, i);
        matmul_nt(rm, MatRef::from_tensor(&m.up, "up")?, &mut up, i);
        gate.iter_mut().zip(&up).for_each(|(g, u)| *g = silu(*g) * u);
        matmul_nt(MatRef::from_slice(&gate, n, i), MatRef::from_tensor(&m.down, "down")?, &mut y, h);
        Ok(y)
    };
    for (ex, m) in weights.experts.iter().enumerate() {
        let slots = &order.order[order.offsets[ex] as usize..order.offsets[ex + 1] as usize];
        if slots.is_empty() {
            continue;
        }
        let tokens: Vec<usize> = slots.iter().map(|&s| s as usize / route.top_k).collect();
        let rows: Vec<f32> = tokens.iter().flat_map(|&tok| &x[tok * h..(tok + 1) * h]).copied().collect();
        let y = swiglu(m, &rows, tokens.len())?;
        for ((&slot, &tok), yr) in slots.iter().zip(&tokens).zip(y.chunks_exact(h)) {
            let wgt = route.weights[slot as usize];
            out[tok * h..(tok + 1) * h].iter_mut().zip(yr).for_each(|(o, v)| *o += wgt * v);
        }
    }
    if let Some(shared) = &weights.shared {
        let y = swiglu(&shared.mats, x, t)?;
        let mut gate = vec![1f32; t];
        if let Some(g) = &shared.gate_weight {
            matmul_nt(xm, MatRef::from_tensor(g, "shared_expert_gate")?, &mut gate, 1);
            gate.iter_mut().for_each(|g| *g = sigmoid(*g));
        }
        for ((o, yr), g) in out.chunks_exact_mut(h).zip(y.chunks_exact(h)).zip(&gate) {
            o.iter_mut().zip(yr).for_each(|(o, v)| *o += g * v);
        }
    }
    Ok(())
}
