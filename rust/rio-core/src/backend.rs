//! The operations a compute backend provides. Model code calls these and never asks which
//! backend it runs on.
use crate::moe::{Dispatch, MoeWeights, RouterConfig, Routing};
use crate::{Result, TensorMut, TensorRef};

pub trait Backend: Send + Sync {
    /// A short name for logs and benchmark tables ("cpu", "cuda").
    fn name(&self) -> &str;

    /// Router: `softmax(x · routerᵀ)` in fp32 over all experts, top-k, optional renormalisation.
    /// `x [T, H]`, `router [E, H]`.
    fn moe_route(&self, x: &TensorRef<'_>, router: &TensorRef<'_>, config: RouterConfig) -> Result<Routing>;

    /// Groups the routed (token, slot) pairs by expert.
    fn moe_dispatch(&self, routing: &Routing, num_experts: usize) -> Result<Dispatch>;

    /// `out[rows of e] = x[rows of e] · weights[e]ᵀ` for every expert e, where expert e owns rows
    /// `offsets[e]..offsets[e+1]` of `x [S, K]` and `out [S, N]`; `weights[e]` is `[N, K]`.
    fn grouped_gemm(&self, x: &TensorRef<'_>, weights: &[TensorRef<'_>], offsets: &[u32], out: &mut TensorMut<'_>) -> Result<()>;

    /// The whole sparse MoE block: route, dispatch, SwiGLU experts, combine, shared expert.
    /// `x [T, H]` and `out [T, H]` of the same float dtype.
    fn moe_forward(&self, x: &TensorRef<'_>, weights: &MoeWeights<'_>, config: RouterConfig, out: &mut TensorMut<'_>) -> Result<()>;
}
