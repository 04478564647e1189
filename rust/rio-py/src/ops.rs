//! rio_rt.ops bindings: MoE router, dispatch, grouped GEMM, whole block.
use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
