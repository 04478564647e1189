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
pub mod dense;
mod device;
pub mod kernels;
mod memory;
mod probe;

pub use backend::CudaBackend;
pub use probe::{probe, Availability, DeviceInfo};

/// One argument of [`launch`], of the exact C type the kernel declares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    /// A device address (`const T *`, `T *`).
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

/// Launches embedded kernel `name` on `stream` of device 0: the decode kernels (norm, RoPE,
/// attention, Gated DeltaNet, sampling, soft embedding) are driven this way until the model's GPU
/// forward calls them from Rust.
///
/// # Safety
/// `args` must match the kernel's parameter list and every pointer must address device memory
/// large enough for the launch; `stream` must be 0 or a live stream of device 0's primary context.
pub unsafe fn launch(
    name: &str,
    grid: (u32, u32, u32),
    block: u32,
    shared_bytes: u32,
    stream: u64,
    args: &[KernelArg],
) -> rio_core::Result<()> {
    let gpu = device::gpu()?;
    gpu.bind()?;
    // Each argument in its own 8-byte slot; the driver reads as many bytes as the parameter's type.
    let mut slots: Vec<u64> = args
        .iter()
        .map(|a| match *a {
            KernelArg::Ptr(p) => p,
            KernelArg::I32(v) => v as u32 as u64,
            KernelArg::I64(v) => v as u64,
            KernelArg::F32(v) => v.to_bits() as u64,
        })
        .collect();
    let mut params: Vec<*mut std::ffi::c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut std::ffi::c_void).collect();
    gpu.launch(name, grid, block, shared_bytes, stream as cudarc::driver::sys::CUstream, &mut params)
}
