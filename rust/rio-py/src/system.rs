//! Build and machine information: version, CPU features, instruction-set cap, thread count.
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rio_cpu::features::{self, Isa};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(cpu_features, m)?)?;
    m.add_function(wrap_pyfunction!(set_max_isa, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    Ok(())
}

/// `{"features": [...], "best_isa": "...", "active_isa": "...", "available_isas": [...]}`
#[pyfunction]
fn cpu_features(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let f = features::detected();
    let d = PyDict::new(py);
    d.set_item("features", f.names())?;
    d.set_item("best_isa", f.best_isa().name())?;
    d.set_item("active_isa", features::active_isa().name())?;
    d.set_item("available_isas", features::available_isas().iter().map(|i| i.name()).collect::<Vec<_>>())?;
    Ok(d)
}

/// Caps the kernels' instruction set; returns the level now active.
#[pyfunction]
fn set_max_isa(name: &str) -> PyResult<&'static str> {
    let isa = Isa::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
        PyValueError::new_err(format!("isa: expected one of {}, got {name:?}", names.join(", ")))
    })?;
    Ok(features::set_max_isa(isa).name())
}

/// Sets the worker threads (0: one per core).
#[pyfunction]
fn set_num_threads(threads: usize) {
    rio_cpu::threads::set_num_threads(threads)
}

#[pyfunction]
fn num_threads() -> usize {
    rio_cpu::threads::num_threads()
}
