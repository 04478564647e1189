//! Grouped GEMM over the experts' row blocks: `gate_up` with a fused SwiGLU, then `down`.
use rayon::prelude::*;
use rio_core::moe::ExpertMats;
use rio_core::{bf16, DType, Tensor};

use super::rows::split_rows_mut;
use crate::gemm::{self, MatRef};

/// `ys[rows of e] = down_e( silu(xs_e · gate_eᵀ) ⊙ (xs_e · up_eᵀ) )` for every expert e, where e
/// owns rows `offsets[e]..offsets[e+1]` of `xs [S, H]`. Returns `ys [S, H]` in f32. The SwiGLU
/// activation is rounded to the dtype of `xs` (bf16 for bf16 weights, as in transformers).
pub fn swiglu_experts(xs: &Tensor, experts: &[ExpertMats<'_>], offsets: &[u32], inter: usize, hidden: usize) -> Vec<f32> {
    let s = xs.shape()[0];
    let mut act = Tensor::zeros(xs.dtype(), &[s, inter]);
    let xm = MatRef::from_tensor(&xs.view(), "xs").expect("owned tensors are contiguous");
    crate::threads::pool().install(|| match xs.dtype() {
        DType::BF16 => gate_up::<bf16>(xm, experts, offsets, inter, act.as_mut_slice()),
        _ => gate_up::<f32>(xm, experts, offsets, inter, act.as_mut_slice()),
    });
    let am = MatRef::from_tensor(&act.view(), "act").expect("owned tensors are contiguous");
    let mut ys = vec![0f32; s * hidden];
    let downs: Vec<MatRef<'_>> = experts.iter().map(|m| MatRef::from_tensor(&m.down, "down_proj").expect("validated")).collect();
    crate::threads::pool().install(|| grouped_gemm(am, &downs, offsets, &mut ys));
    ys
}

trait ActElement: Copy + Send + Sync {
    fn from_f32(v: f32) -> Self;
}
impl ActElement for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl ActElement for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

fn gate_up<T: ActElement>(xs: MatRef<'_>, experts: &[ExpertMats<'_>], offsets: &[u32], inter: usize, act: &mut [T]) {
    let parts = split_rows_mut(act, offsets, inter);
    parts.into_par_iter().enumerate().filter(|(_, p)| !p.is_empty()).for_each(|(e, out)| {
        let x = xs.rows_range(offsets[e] as usize, (offsets[e + 1] - offsets[e]) as usize);
        let gate = MatRef::from_tensor(&experts[e].gate, "gate").expect("validated");
        let up = MatRef::from_tensor(&experts[e].up, "up").expect("validated");
        let mut g = vec![0f32; x.rows * inter];
        let mut u = vec![0f32; x.rows * inter];
        gemm::matmul_nt(x, gate, &mut g, inter);
        gemm::matmul_nt(x, up, &mut u, inter);
        for ((o, &g), &u) in out.iter_mut().zip(&g).zip(&u) {
            *o = T::from_f32(silu(g) * u);
        }
    });
}

/// `out[rows of e] = x[rows of e] · weights[e]ᵀ` for every expert, in parallel.
pub fn grouped_gemm(x: MatRef<'_>, weights: &[MatRef<'_>], offsets: &[u32], out: &mut [f32]) {
    let n = weights.first().map_or(0, |w| w.rows);
    let parts = split_rows_mut(out, offsets, n);
    parts.into_par_iter().enumerate().filter(|(_, p)| !p.is_empty()).for_each(|(e, out)| {
        let rows = x.rows_range(offsets[e] as usize, (offsets[e + 1] - offsets[e]) as usize);
        gemm::matmul_nt(rows, weights[e], out, n);
    });
}
