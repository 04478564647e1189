//! (owned by the generation-core helper: SamplingParams, Sampler)
/// Placeholder until the generation-core helper lands the real sampler.
pub struct Sampler;
