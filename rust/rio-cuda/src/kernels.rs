//! The kernels of `kernels/*.cu`, compiled by build.rs and embedded in the binary.

/// One `kernels/NAME.cu`: PTX for compute_80 / compute_90 (NUL-terminated, for the driver's JIT)
/// and cubins for sm_80 / sm_90.
#[derive(Debug)]
pub struct KernelModule {
    pub name: &'static str,
    pub ptx_80: &'static str,
    pub cubin_80: &'static [u8],
    pub ptx_90: &'static str,
    pub cubin_90: &'static [u8],
}

impl KernelModule {
    /// The image for a device of compute capability `major.minor`: the exact cubin where SASS is
    /// binary compatible (8.x runs sm_80, 9.0 runs sm_90), else the newest PTX the device can JIT.
    pub fn image_for(&self, major: i32, minor: i32) -> &'static [u8] {
        match (major, minor) {
            (8, _) => self.cubin_80,
            (9, 0) => self.cubin_90,
            (m, _) if m >= 9 => self.ptx_90.as_bytes(),
            _ => self.ptx_80.as_bytes(),
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The module that defines kernel `function` (`extern "C"` names are unique across files).
pub fn module_of(function: &str) -> Option<&'static KernelModule> {
    MODULES.iter().find(|m| m.ptx_80.contains(&format!(".entry {function}(")))
}
