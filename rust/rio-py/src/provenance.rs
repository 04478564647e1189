//! rio_rt.provenance bindings: blend fits of a checkpoint against candidate parents.
use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
