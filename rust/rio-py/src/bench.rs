//! Benchmark primitives: the machine's read bandwidth and GEMM peak, timed in Rust.
use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
