//! rio-generate: everything between two forward passes.
//!
//! - [`sampling`]: sampling parameters, logits processors (penalties, temperature, top-k,
//!   top-p, min-p), seeded per-sequence sampling, logprobs,
//! - [`controller`]: what decides, per sequence and step, the recorded token and the next input
//!   (a token or a soft embedding): plain explicit decoding, SwiReasoning, Soft Thinking,
//! - [`generate`]: the decode loop over a batch of sequences, stop conditions, streaming,
//! - [`swireasoning`] / [`soft_thinking`]: the latent-reasoning controllers,
//! - [`trace`]: per-step records of a reasoning run.
pub mod controller;
pub mod generate;
pub mod sampling;
pub mod soft_thinking;
pub mod swireasoning;
pub mod trace;
