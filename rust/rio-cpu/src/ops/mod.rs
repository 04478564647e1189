//! Plain kernels of the Qwen3.5-MoE token mixers (spec sections 2-4) and of latent reasoning,
//! one job per module:
//! - `norm`: RMSNorm with a zero-centred weight (`1 + w`), the gated RMSNorm of Gated DeltaNet,
//!   and the L2 normalisation of its queries and keys;
//! - `rope`: rotate-half RoPE on the first channels of a head;
//! - `conv`: the causal depthwise conv1d + SiLU with a carried history;
//! - `gated_delta`: the gated delta rule, one token of one value head at a time;
//! - `attention`: causal grouped-query attention of new queries over a key/value cache;
//! - `soft_embedding`: softmax with entropy, and the probability-weighted mixes of embedding rows
//!   that soft inputs are (swireasoning spec 1.1, 2.2).
//!
//! Activations are f32 buffers. The kernels compute in f32 as transformers does in its fp32 path;
//! for its bf16 dtype flow (qwen35moe spec section 9) some take a flag, or have a `_bf16` twin,
//! that rounds to bf16 where transformers holds a bf16 tensor (attention probabilities and
//! output, conv and SiLU outputs, the gated norm). `soft_embedding` reads `E` stored as f32,
//! bf16 or f16. Tests compare each kernel with a plain float64 twin.
pub mod attention;
pub mod conv;
pub mod gated_delta;
pub mod norm;
pub mod rope;
pub mod soft_embedding;

/// `x · sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `log(1 + e^x)`, linear above 20 like `torch.nn.functional.softplus`.
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}
