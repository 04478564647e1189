//! Python exceptions for `rio_core::Error`: one base `RioError`, `CheckpointError` and
//! `ConfigError` (also `ValueError`s) for bad files, `ValueError`/`TypeError` for bad arguments.
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyNotImplementedError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use rio_core::Error;

create_exception!(rio_rt, RioError, PyException, "Base class of every error rio_rt raises itself.");
create_exception!(rio_rt, CheckpointError, RioError, "A checkpoint file is missing, truncated or inconsistent.");
create_exception!(rio_rt, ConfigError, RioError, "A config file is unreadable or holds unsupported values.");

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RioError", py.get_type::<RioError>())?;
    m.add("CheckpointError", py.get_type::<CheckpointError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    Ok(())
}

/// Maps a core error to the Python exception a user expects.
pub fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Shape { .. } | Error::Value { .. } => PyValueError::new_err(msg),
        Error::DType { .. } => PyTypeError::new_err(msg),
        Error::Checkpoint { .. } => CheckpointError::new_err(msg),
        Error::Config { .. } => ConfigError::new_err(msg),
        Error::Unsupported(_) => PyNotImplementedError::new_err(msg),
    }
}
