//! The worker pool. One pool per process, sized to the machine unless the user asks otherwise.
use std::sync::{Arc, RwLock};

static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

fn build(threads: usize) -> Arc<rayon::ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rio-cpu-{i}"))
            .start_handler(|_| flush_denormals())
            .build()
            .expect("a thread pool of positive size always builds"),
    )
}

/// The pool parallel kernels run on.
pub fn pool() -> Arc<rayon::ThreadPool> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return p.clone();
    }
    let mut slot = POOL.write().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert_with(|| build(std::thread::available_parallelism().map_or(1, |n| n.get()))).clone()
}

/// Resizes the pool (0: one thread per available core). Work already running keeps its pool.
pub fn set_num_threads(threads: usize) {
    let n = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
    *POOL.write().unwrap_or_else(|e| e.into_inner()) = Some(build(n));
}

pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Sets this thread's SSE/AVX control word to flush subnormal results to zero and treat subnormal
/// inputs as zero. The Gated DeltaNet chunk's decays `exp(g_i - g_j)` and attention's masked
/// exponentials reach the subnormal range (below 1.2e-38) on strongly decaying heads, where
/// every x86 operation takes a ~100-cycle microcode assist: a 64-token chunk ran 4x slower.
/// Values that small change no result at f32 precision.
fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    {
        const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
        let mut csr = 0u32;
        // SAFETY: reads and writes this thread's MXCSR only, keeping every other bit.
        unsafe {
            std::arch::asm!("stmxcsr [{0}]", in(reg) &mut csr, options(nostack));
            csr |= FTZ_DAZ;
            std::arch::asm!("ldmxcsr [{0}]", in(reg) &csr, options(nostack, readonly));
        }
    }
}
