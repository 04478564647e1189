//! `rio_rt._rio_rt`: the native module. Thin by design: convert arguments, release the GIL, call
//! the Rust core, map errors. One file per area of the Python API.
use pyo3::prelude::*;

mod arrays;
mod bench;
mod dlpack;
mod errors;
mod model;
mod ops;
mod provenance;
mod system;

#[pymodule]
fn _rio_rt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    system::register(m)?;
    ops::register(m)?;
    bench::register(m)?;
    provenance::register(m)?;
    model::register(m)?;
    Ok(())
}
