//! Building blocks the model files share: f32 weights read from a checkpoint, linear layers and
//! the plain-weight RMSNorm.
pub mod linear;
pub mod norm;
pub mod weights;

pub use linear::Linear;
pub use norm::rms_norm_inplace;
pub use weights::load_f32;
