//! Building blocks the model files share: f32 weights read from a checkpoint, and linear layers.
pub mod linear;
pub mod weights;

pub use linear::Linear;
pub use weights::load_f32;
