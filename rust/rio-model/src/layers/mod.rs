//! Building blocks the model files share: f32 weights read from a checkpoint, linear layers,
//! the plain-weight RMSNorm, and the embedding / final norm / lm_head ends of a causal LM.
pub mod linear;
pub mod lm_ends;
pub mod norm;
pub mod weights;

pub use linear::Linear;
pub use lm_ends::{eos_token_ids, Input, LmEnds};
pub use norm::rms_norm_inplace;
pub use weights::load_f32;
