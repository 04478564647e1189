//! rio-cpu: the CPU backend.
//!
//! - `features`: which SIMD paths this CPU (and OS) offers, detected once at run time;
//! - `gemm`: `x · wᵀ` microkernels per instruction set, and their plain reference twin;
//! - `moe`: router, dispatch, grouped GEMM, SwiGLU, combine, and the whole block;
//! - `ops`: the f32 token-mixer kernels of Qwen3.5-MoE (norms, RoPE, conv, gated delta rule, attention);
//! - `peak`: the machine's measured read bandwidth and bf16 GEMM rate, for benchmarks;
//! - `scratch`: buffers reused across calls, so steady-state calls map no new memory;
//! - `threads`: the worker pool every parallel kernel runs on;
//! - `backend`: [`CpuBackend`], the `rio_core::Backend` implementation tying these together.
pub mod backend;
pub mod features;
pub mod gemm;
pub mod moe;
pub mod ops;
pub mod peak;
pub mod scratch;
pub mod threads;

pub use backend::CpuBackend;
