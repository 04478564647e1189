//! The process's CUDA device 0: its primary context (shared with torch) and the embedded kernel
//! modules, loaded on first use.
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::{result, sys, DriverError};
use rio_core::{Error, Result};

use crate::{kernels, probe};

pub(crate) fn driver_error(what: &str, e: DriverError) -> Error {
    Error::Unsupported(format!("CUDA {what} failed: {e:?}"))
}

pub(crate) struct Gpu {
    ctx: sys::CUcontext,
    pub compute_capability: (i32, i32),
    functions: Mutex<HashMap<String, usize>>,
    modules: Mutex<HashMap<&'static str, usize>>,
}

// SAFETY: a CUDA context handle may be used from any thread (it is made current per call).
unsafe impl Send for Gpu {}
unsafe impl Sync for Gpu {}

/// Device 0, after [`probe`] said yes.
pub(crate) fn gpu() -> Result<&'static Gpu> {
    static GPU: OnceLock<std::result::Result<Gpu, String>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| {
        let a = probe();
        if !a.available {
            return Err(format!("no CUDA GPU: {}", a.reason));
        }
        let dev = result::device::get(0).map_err(|e| format!("cuDeviceGet failed: {e:?}"))?;
        // SAFETY: dev is valid; the primary context is the one torch uses too.
        let ctx = unsafe { result::primary_ctx::retain(dev) }.map_err(|e| format!("cuDevicePrimaryCtxRetain failed: {e:?}"))?;
        Ok(Gpu {
            ctx,
            compute_capability: a.devices[0].compute_capability,
            functions: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
        })
    });
    gpu.as_ref().map_err(|reason| Error::Unsupported(reason.clone()))
}

impl Gpu {
    /// Makes the context current on this thread.
    pub fn bind(&self) -> Result<()> {
        // SAFETY: ctx is a retained primary context.
        unsafe { result::ctx::set_current(self.ctx) }.map_err(|e| driver_error("cuCtxSetCurrent", e))
    }

    /// The kernel `name`, loading its module the first time.
    pub fn function(&self, name: &str) -> Result<sys::CUfunction> {
        if let Some(&f) = self.functions.lock().unwrap().get(name) {
            return Ok(f as sys::CUfunction);
        }
        let module =
            kernels::module_of(name).ok_or_else(|| Error::Unsupported(format!("CUDA kernel {name} is not in the embedded modules")))?;
        let handle = {
            let mut modules = self.modules.lock().unwrap();
            match modules.get(module.name) {
                Some(&m) => m as sys::CUmodule,
                None => {
                    let (major, minor) = self.compute_capability;
                    let image = module.image_for(major, minor);
                    // SAFETY: image is a complete cubin or a NUL-terminated PTX string.
                    let m = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
                        .map_err(|e| driver_error(&format!("loading kernels/{}.cu for sm_{major}{minor}", module.name), e))?;
                    modules.insert(module.name, m as usize);
                    m
                }
            }
        };
        let cname = CString::new(name).unwrap();
        // SAFETY: handle is a loaded module.
        let f =
            unsafe { result::module::get_function(handle, cname) }.map_err(|e| driver_error(&format!("cuModuleGetFunction({name})"), e))?;
        self.functions.lock().unwrap().insert(name.to_string(), f as usize);
        Ok(f)
    }

    /// Launches kernel `name`. `params` point at the arguments, in order, each of the exact type
    /// the kernel declares.
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        stream: sys::CUstream,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let f = self.function(name)?;
        // SAFETY: params match the kernel's signature (the caller's contract).
        unsafe { result::launch_kernel(f, grid, (block, 1, 1), smem, stream, params) }
            .map_err(|e| driver_error(&format!("launching {name}"), e))
    }
}

/// Kernel parameter list: pointers to each argument, as cuLaunchKernel takes them.
macro_rules! params {
    ($($arg:expr),* $(,)?) => {
        [$(&$arg as *const _ as *mut std::ffi::c_void),*]
    };
}
pub(crate) use params;
