//! rio-cuda: the CUDA backend of rio_rt (NVIDIA sm_80 Ampere and sm_90 Hopper).
//!
//! - The kernels are ours (`kernels/*.cu`), compiled by nvcc at build time into PTX and cubins
//!   that are embedded here ([`kernels`]); a build without nvcc has none and says so.
//! - The driver (libcuda) and cuBLAS are loaded at run time through cudarc's dynamic loading, and
//!   [`probe`] checks them before any call, so the same binary runs on machines without a GPU:
//!   `probe().available` is false with a reason, never a panic.
//! - [`CudaBackend`] implements [`rio_core::Backend`] on device memory. Tensor views may point to
//!   device memory (DLPack tensors from torch) or host memory (copied in and out per call).
pub mod backend;
mod device;
pub mod kernels;
mod memory;
mod probe;

pub use backend::CudaBackend;
pub use probe::{probe, Availability, DeviceInfo};
