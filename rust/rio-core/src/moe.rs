//! Mixture-of-Experts descriptors shared by every backend (spec section 5).
//!
//! Both checkpoint layouts, fused `gate_up_proj [E, 2I, H]` + `down_proj [E, H, I]` and per-expert
//! `gate_proj/up_proj [I, H]` + `down_proj [H, I]`, become the same list of per-expert matrix views:
//! the fused gate is rows `[0, I)` of `gate_up_proj[e]` and the up matrix rows `[I, 2I)`, so no
//! weight is copied.
use crate::{DType, Error, Result, TensorRef};

/// How the router turns probabilities into expert weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// Experts per token (k).
    pub top_k: usize,
    /// Divide the k chosen probabilities by their sum. Always on for Qwen3.5-MoE; Qwen3-MoE's
    /// `norm_topk_prob` switch.
    pub renormalize: bool,
}

/// One routed (or shared) expert: `down(silu(gate·x) ⊙ up·x)`. Matrices are (out, in), row-major.
#[derive(Clone, Debug)]
pub struct ExpertMats<'a> {
    /// `[I, H]`
    pub gate: TensorRef<'a>,
    /// `[I, H]`
    pub up: TensorRef<'a>,
    /// `[H, I]`
    pub down: TensorRef<'a>,
}

/// The shared expert and its scalar sigmoid gate `shared_expert_gate.weight [1, H]`.
#[derive(Clone, Debug)]
pub struct SharedExpert<'a> {
    pub mats: ExpertMats<'a>,
    /// `None`: the shared expert is added ungated.
    pub gate_weight: Option<TensorRef<'a>>,
}

/// All weights of one sparse MoE block.
#[derive(Clone, Debug)]
pub struct MoeWeights<'a> {
    /// `[E, H]`
    pub router: TensorRef<'a>,
    pub experts: Vec<ExpertMats<'a>>,
    pub shared: Option<SharedExpert<'a>>,
}

const WEIGHT_DTYPES: [DType; 3] = [DType::BF16, DType::F16, DType::F32];

fn expect_matrix(t: &TensorRef<'_>, arg: &str, rows: usize, cols: usize, names: &str, dtype: DType) -> Result<()> {
    t.expect_shape(arg, &[Some(rows), Some(cols)], names)?;
    if t.dtype() != dtype {
        return Err(Error::dtype(arg, format!("{dtype} (the dtype of the expert weights)"), t.dtype()));
    }
    if t.strides()[1] != 1 && cols > 1 {
        return Err(Error::value(arg, "rows must be contiguous (inner stride 1)"));
    }
    Ok(())
}

impl<'a> MoeWeights<'a> {
    /// Fused layout: `gate_up [E, 2I, H]` (gate rows first) and `down [E, H, I]`.
    pub fn fused(router: TensorRef<'a>, gate_up: TensorRef<'a>, down: TensorRef<'a>, shared: Option<SharedExpert<'a>>) -> Result<Self> {
        gate_up.expect_dtype("gate_up_proj", &WEIGHT_DTYPES)?;
        if gate_up.ndim() != 3 || gate_up.shape()[1] % 2 != 0 {
            return Err(Error::shape("gate_up_proj", "(E, 2*I, H)", gate_up.shape()));
        }
        let (e, two_i, h) = (gate_up.shape()[0], gate_up.shape()[1], gate_up.shape()[2]);
        let i = two_i / 2;
        down.expect_shape("down_proj", &[Some(e), Some(h), Some(i)], "(E, H, I)")?;
        let experts = (0..e)
            .map(|x| {
                let gu = gate_up.index0(x);
                ExpertMats { gate: gu.narrow0(0, i), up: gu.narrow0(i, i), down: down.index0(x) }
            })
            .collect();
        let w = MoeWeights { router, experts, shared };
        w.validate()?;
        Ok(w)
    }

    /// Per-expert layout: `gate[e] [I, H]`, `up[e] [I, H]`, `down[e] [H, I]`.
    pub fn per_expert(
        router: TensorRef<'a>,
        gate: Vec<TensorRef<'a>>,
        up: Vec<TensorRef<'a>>,
        down: Vec<TensorRef<'a>>,
        shared: Option<SharedExpert<'a>>,
    ) -> Result<Self> {
        if gate.len() != up.len() || gate.len() != down.len() {
            return Err(Error::value(
                "experts",
                format!("{} gate, {} up and {} down matrices; need one of each per expert", gate.len(), up.len(), down.len()),
            ));
        }
        let experts = gate.into_iter().zip(up).zip(down).map(|((gate, up), down)| ExpertMats { gate, up, down }).collect();
        let w = MoeWeights { router, experts, shared };
        w.validate()?;
        Ok(w)
    }

    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }
    /// H
    pub fn hidden(&self) -> usize {
        self.router.shape().get(1).copied().unwrap_or(0)
    }
    /// I (0 when there are no experts)
    pub fn intermediate(&self) -> usize {
        self.experts.first().map_or(0, |m| m.gate.shape()[0])
    }
    /// The dtype of the expert weights.
    pub fn dtype(&self) -> DType {
        self.experts.first().map_or(self.router.dtype(), |m| m.gate.dtype())
    }

    fn validate(&self) -> Result<()> {
        self.router.expect_dtype("router_weight", &WEIGHT_DTYPES)?;
        if self.router.ndim() != 2 {
            return Err(Error::shape("router_weight", "(E, H)", self.router.shape()));
        }
        let (e, h) = (self.router.shape()[0], self.router.shape()[1]);
        if e == 0 {
            return Err(Error::value("router_weight", "needs at least one expert"));
        }
        if self.experts.len() != e {
            return Err(Error::value(
                "router_weight",
                format!("routes over {e} experts but {} expert weight sets were given", self.experts.len()),
            ));
        }
        let i = self.intermediate();
        let dtype = self.dtype();
        for (x, m) in self.experts.iter().enumerate() {
            expect_matrix(&m.gate, &format!("experts[{x}].gate"), i, h, "(I, H)", dtype)?;
            expect_matrix(&m.up, &format!("experts[{x}].up"), i, h, "(I, H)", dtype)?;
            expect_matrix(&m.down, &format!("experts[{x}].down"), h, i, "(H, I)", dtype)?;
        }
        if let Some(s) = &self.shared {
            let is = s.mats.gate.shape().first().copied().unwrap_or(0);
            expect_matrix(&s.mats.gate, "shared_gate_proj", is, h, "(I_s, H)", dtype)?;
            expect_matrix(&s.mats.up, "shared_up_proj", is, h, "(I_s, H)", dtype)?;
            expect_matrix(&s.mats.down, "shared_down_proj", h, is, "(H, I_s)", dtype)?;
            if let Some(g) = &s.gate_weight {
                expect_matrix(g, "shared_expert_gate", 1, h, "(1, H)", dtype)?;
            }
        }
        Ok(())
    }
}

/// The router's choice for every token: `experts[t*k + j]` with weight `weights[t*k + j]`, slots
/// ordered by decreasing probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub top_k: usize,
    pub experts: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Routing {
    pub fn num_tokens(&self) -> usize {
        self.experts.len().checked_div(self.top_k).unwrap_or(0)
    }
}

/// (token, slot) pairs grouped by expert: a counting sort of `Routing::experts`.
///
/// Sorted position `p` holds flat slot `order[p]` (token `order[p] / k`); expert `e` owns sorted
/// positions `offsets[e]..offsets[e+1]`, in increasing token order; `position[s]` inverts `order`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub counts: Vec<u32>,
    pub offsets: Vec<u32>,
    pub order: Vec<u32>,
    pub position: Vec<u32>,
}

/// Checks `top_k` against the number of experts.
pub fn check_top_k(top_k: usize, num_experts: usize) -> Result<()> {
    if top_k == 0 || top_k > num_experts {
        return Err(Error::value("top_k", format!("must be in 1..={num_experts} (the number of experts), got {top_k}")));
    }
    Ok(())
}

/// The argument checks every backend's `moe_route` shares: `router [E, H]` and `x [T, H]` in a
/// float dtype, `top_k` within E. Returns `(T, E)`.
pub fn check_route_args(x: &TensorRef<'_>, router: &TensorRef<'_>, config: RouterConfig) -> Result<(usize, usize)> {
    router.expect_dtype("router_weight", &[DType::BF16, DType::F16, DType::F32])?;
    if router.ndim() != 2 {
        return Err(Error::shape("router_weight", "(E, H)", router.shape()));
    }
    let (e, h) = (router.shape()[0], router.shape()[1]);
    x.expect_dtype("x", &[DType::BF16, DType::F16, DType::F32])?;
    x.expect_shape("x", &[None, Some(h)], "(T, H)")?;
    check_top_k(config.top_k, e)?;
    Ok((x.shape()[0], e))
}

/// The argument checks every backend's `grouped_gemm` shares: `x [S, K]`, experts' `[N, K]`
/// matrices, `offsets` rising from 0 to S with one step per expert. Returns `(S, N, K)`.
pub fn check_grouped_gemm_args(x: &TensorRef<'_>, weights: &[TensorRef<'_>], offsets: &[u32]) -> Result<(usize, usize, usize)> {
    x.expect_dtype("x", &[DType::BF16, DType::F16, DType::F32])?;
    let first = weights.first().ok_or_else(|| Error::value("weights", "needs at least one expert"))?;
    if first.ndim() != 2 {
        return Err(Error::shape("weights", "(E, N, K)", first.shape()));
    }
    let (n, k) = (first.shape()[0], first.shape()[1]);
    x.expect_shape("x", &[None, Some(k)], "(S, K)")?;
    let s = x.shape()[0];
    if offsets.len() != weights.len() + 1
        || offsets[0] != 0
        || offsets.windows(2).any(|w| w[0] > w[1])
        || offsets[weights.len()] as usize != s
    {
        return Err(Error::value("offsets", format!("must rise from 0 to {s} (the rows of x) in {} steps, one per expert", weights.len())));
    }
    Ok((s, n, k))
}
