//! Building blocks the model files share: weights read in place from the checkpoint and the
//! compute precision, linear layers, the plain-weight RMSNorm, the MoE block, and the embedding /
//! final norm / lm_head ends of a causal LM, and the decoder-layer loop between them.
pub mod linear;
pub mod lm_ends;
pub mod moe;
pub mod norm;
pub mod rope;
pub mod stack;
pub mod weights;

pub use linear::{Linear, Rows};
pub use lm_ends::{eos_token_ids, Input, LmEnds};
pub use moe::MoeBlock;
pub use norm::rms_norm_inplace;
pub use rope::Rope;
pub use stack::{open_folder, run_layers};
pub use weights::{round_bf16, Loader, Precision, Weight};
