//! rio-core: the types every rio_rt crate shares.
//!
//! - [`DType`]: element types (bf16, f16, f32 and the integer index types),
//! - [`TensorRef`] / [`TensorMut`]: strided views over memory the caller owns (numpy, torch, mmap),
//! - [`Tensor`]: an owned, 64-byte aligned buffer with a shape,
//! - [`Error`]: every failure a user can cause, with the argument it concerns,
//! - [`Backend`]: the operations a compute backend (CPU, CUDA) provides.
pub mod backend;
pub mod dtype;
pub mod error;
pub mod moe;
pub mod tensor;

pub use backend::Backend;
pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use half::{bf16, f16};
pub use tensor::{Tensor, TensorMut, TensorRef};
