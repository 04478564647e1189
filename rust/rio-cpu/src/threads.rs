//! The worker pool. One pool per process, sized to the machine unless the user asks otherwise.
use std::sync::{Arc, RwLock};

static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

fn build(threads: usize) -> Arc<rayon::ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rio-cpu-{i}"))
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
