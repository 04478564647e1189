//! rio-model: checkpoint folders (config, memory-mapped safetensors shards) and model definitions.
//!
//! - [`safetensors`]: one memory-mapped `.safetensors` file with a strictly validated header,
//! - [`index`]: the `model.safetensors.index.json` of a sharded checkpoint,
//! - [`names`]: stored keys to logical names (key prefixes, skipped towers, per-expert keys),
//! - [`checkpoint`]: a checkpoint folder as one map of logical tensors, zero copy,
//! - [`causal_lm`]: the [`CausalLm`] trait the generation loop drives, and [`AnyModel`].
pub mod cache;
pub mod causal_lm;
pub mod checkpoint;
pub mod config;
pub mod index;
pub mod layers;
pub mod names;
pub mod qwen3_5_moe;
pub mod qwen3_moe;
pub mod safetensors;

pub use causal_lm::{AnyModel, CausalLm};
pub use checkpoint::{Checkpoint, LogicalTensor, Part};
pub use safetensors::{Access, SafetensorsFile, StoredDType, TensorInfo};
