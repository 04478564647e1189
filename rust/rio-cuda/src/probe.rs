//! Is a usable CUDA device here? Checked once, without panicking, before the backend touches the
//! driver: the kernels must be embedded, libcuda must load, the driver must be 13.0 or newer (the
//! PTX is ISA 9.0 from nvcc 13.0) and a device of compute capability 8.0 or higher must exist.
use std::sync::OnceLock;

use cudarc::driver::{result, sys};

use crate::kernels;

/// The oldest driver API version (`cuDriverGetVersion`) that loads our PTX.
const MIN_DRIVER: i32 = 13000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: i32,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// True when [`crate::CudaBackend::new`] can run kernels on device 0.
    pub available: bool,
    /// Why not (empty when available).
    pub reason: String,
    /// The nvcc that compiled the embedded kernels, if any.
    pub nvcc: Option<&'static str>,
    /// Names of the embedded kernel files (`kernels/NAME.cu`).
    pub kernel_modules: Vec<&'static str>,
    /// `cuDriverGetVersion`, e.g. 13000 for 13.0.
    pub driver_version: Option<i32>,
    pub devices: Vec<DeviceInfo>,
    /// libcublas could be loaded (dense GEMMs); the MoE kernels do not need it.
    pub cublas: bool,
}

/// The probe's answer, computed once per process.
pub fn probe() -> &'static Availability {
    static PROBE: OnceLock<Availability> = OnceLock::new();
    PROBE.get_or_init(|| {
        let mut a = Availability {
            available: false,
            reason: String::new(),
            nvcc: kernels::NVCC,
            kernel_modules: kernels::MODULES.iter().map(|m| m.name).collect(),
            driver_version: None,
            devices: Vec::new(),
            cublas: false,
        };
        // cudarc panics when a symbol is missing from an unexpected driver; keep that a reason.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&mut a))) {
            Ok(Ok(())) => a.available = true,
            Ok(Err(reason)) => a.reason = reason,
            Err(_) => a.reason = "the CUDA driver library is missing functions of the CUDA 13.0 driver API".to_string(),
        }
        a
    })
}

fn check(a: &mut Availability) -> Result<(), String> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { sys::is_culib_present() } {
        return Err("the NVIDIA driver library (libcuda.so) was not found".into());
    }
    result::init().map_err(|e| format!("cuInit failed: {e:?} (no usable NVIDIA GPU or driver)"))?;
    let mut version = 0;
    // SAFETY: plain out-parameter call on an initialised driver.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result().map_err(|e| format!("cuDriverGetVersion failed: {e:?}"))?;
    a.driver_version = Some(version);
    let count = result::device::get_count().map_err(|e| format!("cuDeviceGetCount failed: {e:?}"))?;
    for ordinal in 0..count {
        let dev = result::device::get(ordinal).map_err(|e| format!("cuDeviceGet({ordinal}) failed: {e:?}"))?;
        let attr = |at| unsafe { result::device::get_attribute(dev, at) }.unwrap_or(0);
        a.devices.push(DeviceInfo {
            ordinal,
            name: result::device::get_name(dev).unwrap_or_default(),
            compute_capability: (
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
            ),
            // SAFETY: dev is a valid device handle.
            total_memory: unsafe { result::device::total_mem(dev) }.unwrap_or(0),
        });
    }
    // SAFETY: only tries to dlopen the library.
    a.cublas = unsafe { cudarc::cublas::sys::is_culib_present() };
    if kernels::MODULES.is_empty() {
        return Err(kernels::BUILD_NOTE.trim().to_string());
    }
    if version < MIN_DRIVER {
        return Err(format!("the driver supports CUDA {}.{}; the kernels need 13.0 or newer", version / 1000, version % 1000 / 10));
    }
    let Some(first) = a.devices.first() else {
        return Err("the driver found no CUDA device".into());
    };
    if first.compute_capability.0 < 8 {
        let (ma, mi) = first.compute_capability;
        return Err(format!("device 0 ({}) has compute capability {ma}.{mi}; the kernels need 8.0 (Ampere) or newer", first.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_without_panicking_and_explains_a_no() {
        let a = probe();
        if a.available {
            assert!(a.reason.is_empty());
            assert!(!a.devices.is_empty());
        } else {
            assert!(!a.reason.is_empty(), "an unavailable backend must say why");
            eprintln!("no CUDA GPU: {}", a.reason);
        }
        assert_eq!(a.kernel_modules.is_empty(), a.nvcc.is_none());
    }
}
