//! What the generation loop needs from a model, whatever its architecture: the [`CausalLm`]
//! trait, and [`AnyModel`], a checkpoint folder loaded as the architecture its `model_type` names.
use std::path::Path;

use rio_core::{Error, Result, TensorRef};

use crate::cache::ModelCache;
use crate::config::{Architecture, GenerationConfig};
use crate::layers::{Input, Precision};
use crate::qwen3_5_moe::Qwen35Moe;
use crate::qwen3_moe::Qwen3Moe;

/// A decoder-only language model with per-sequence caches.
pub trait CausalLm: Send + Sync {
    /// `"qwen3_5_moe"` or `"qwen3_moe"`.
    fn model_type(&self) -> &'static str;
    fn vocab_size(&self) -> usize;
    fn hidden_size(&self) -> usize;
    fn num_layers(&self) -> usize;
    /// The tokens that end a generation: `generation_config.json`'s, then `config.json`'s.
    fn eos_token_ids(&self) -> Vec<u32>;
    fn generation_config(&self) -> &GenerationConfig;
    /// A fresh, empty per-sequence cache.
    fn new_cache(&self) -> ModelCache;
    /// The input embedding matrix `[V, H]` in its stored dtype (bf16, f16 or f32): what soft
    /// embeddings mix (`pᵀE`). Row `t` is exactly what the forward adds for token `t`.
    fn embedding_table(&self) -> TensorRef<'_>;
    /// The embedding rows of `tokens` as f32, `[T, H]`.
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Runs T new tokens (or embeddings) after what `cache` has seen and returns the f32 logits
    /// `[n, V]` of the last `n = logits_to_keep` new positions (all T for 0, as transformers).
    fn forward(&self, input: Input<'_>, cache: &mut ModelCache, logits_to_keep: usize) -> Result<Vec<f32>>;
    /// One step for several sequences at once: sequence `b` continues `caches[b]` with
    /// `inputs[b]` (any number of rows, lengths may differ). Returns the f32 logits of each
    /// sequence's last new position, `[B, V]`. Results equal B separate `forward` calls.
    fn forward_batch(&self, inputs: &[Input<'_>], caches: &mut [&mut ModelCache]) -> Result<Vec<f32>> {
        if inputs.len() != caches.len() {
            return Err(Error::value("caches", format!("{} inputs but {} caches", inputs.len(), caches.len())));
        }
        let mut out = Vec::with_capacity(inputs.len() * self.vocab_size());
        for (input, cache) in inputs.iter().zip(caches.iter_mut()) {
            out.extend(self.forward(*input, cache, 1)?);
        }
        Ok(out)
    }
}

/// [`CausalLm`] for a model struct of this crate: one with `config` (vocab, hidden and layer
/// sizes), `generation` and `ends` ([`crate::layers::LmEnds`]) fields and inherent
/// `eos_token_ids`, `new_cache`, `forward` and `forward_batch`, which the trait methods call.
macro_rules! impl_causal_lm {
    ($model:ident, $model_type:literal) => {
        impl $crate::CausalLm for $model {
            fn model_type(&self) -> &'static str {
                $model_type
            }
            fn vocab_size(&self) -> usize {
                self.config.vocab_size
            }
            fn hidden_size(&self) -> usize {
                self.config.hidden_size
            }
            fn num_layers(&self) -> usize {
                self.config.num_hidden_layers
            }
            fn eos_token_ids(&self) -> Vec<u32> {
                $model::eos_token_ids(self)
            }
            fn generation_config(&self) -> &$crate::config::GenerationConfig {
                &self.generation
            }
            fn new_cache(&self) -> $crate::cache::ModelCache {
                $model::new_cache(self)
            }
            fn embedding_table(&self) -> ::rio_core::TensorRef<'_> {
                self.ends.table()
            }
            fn embed(&self, tokens: &[u32]) -> ::rio_core::Result<Vec<f32>> {
                self.ends.embed(tokens)
            }
            fn forward(
                &self,
                input: $crate::layers::Input<'_>,
                cache: &mut $crate::cache::ModelCache,
                logits_to_keep: usize,
            ) -> ::rio_core::Result<Vec<f32>> {
                $model::forward(self, input, cache, logits_to_keep)
            }
            fn forward_batch(
                &self,
                inputs: &[$crate::layers::Input<'_>],
                caches: &mut [&mut $crate::cache::ModelCache],
            ) -> ::rio_core::Result<Vec<f32>> {
                $model::forward_batch(self, inputs, caches)
            }
        }
    };
}
pub(crate) use impl_causal_lm;

/// A checkpoint folder loaded as the architecture its `config.json` names.
#[derive(Debug)]
pub enum AnyModel {
    Qwen35Moe(Qwen35Moe),
    Qwen3Moe(Qwen3Moe),
}

impl AnyModel {
    /// Loads a checkpoint folder computing in its own dtype (bf16 for bf16 checkpoints).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<AnyModel> {
        Self::from_dir_with(dir, "auto")
    }

    /// Loads a checkpoint folder computing in `dtype`: `"auto"`, `"bfloat16"` or `"float32"`.
    pub fn from_dir_with(dir: impl AsRef<Path>, dtype: &str) -> Result<AnyModel> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::checkpoint(dir.display().to_string(), "no such checkpoint folder"));
        }
        Ok(match Architecture::from_dir(dir)? {
            Architecture::Qwen35Moe => AnyModel::Qwen35Moe(Qwen35Moe::from_dir_with(dir, dtype)?),
            Architecture::Qwen3Moe => AnyModel::Qwen3Moe(Qwen3Moe::from_dir_with(dir, dtype)?),
        })
    }

    /// The RoPE inverse frequencies and the factor cos/sin are multiplied by (spec 2.2, 2.3;
    /// YaRN included), as the attention layers use them.
    pub fn rope(&self) -> (Vec<f32>, f32) {
        match self {
            AnyModel::Qwen35Moe(m) => m.config().rope.inv_freq(m.config().rotary_dim()),
            AnyModel::Qwen3Moe(m) => m.config().rope.inv_freq(m.config().rotary_dim()),
        }
    }

    /// The dtype the forward computes in.
    pub fn precision(&self) -> Precision {
        match self {
            AnyModel::Qwen35Moe(m) => m.precision(),
            AnyModel::Qwen3Moe(m) => m.precision(),
        }
    }

    pub fn as_lm(&self) -> &dyn CausalLm {
        match self {
            AnyModel::Qwen35Moe(m) => m,
            AnyModel::Qwen3Moe(m) => m,
        }
    }
}
