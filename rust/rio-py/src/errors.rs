//! Python exceptions for `rio_core::Error`: one base `RioError`; `CheckpointError` and
//! `ConfigError` (subclasses of both `RioError` and `ValueError`) for bad files;
//! `ValueError`/`TypeError` for bad arguments.
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyNotImplementedError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use rio_core::Error;

create_exception!(rio_rt, RioError, PyException, "Base class of every error rio_rt raises itself.");

static CHECKPOINT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CONFIG_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `class name(RioError, ValueError)`: create_exception! takes one base, so build it with `type()`.
fn file_error_type<'py>(py: Python<'py>, cell: &'static PyOnceLock<Py<PyType>>, name: &str, doc: &str) -> PyResult<Bound<'py, PyType>> {
    let ty = cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let bases = PyTuple::new(py, [py.get_type::<RioError>(), py.get_type::<PyValueError>()])?;
        let attrs = PyDict::new(py);
        attrs.set_item("__doc__", doc)?;
        attrs.set_item("__module__", "rio_rt")?;
        let ty = py.get_type::<PyType>().call1((name, bases, attrs))?;
        Ok(ty.cast_into::<PyType>()?.unbind())
    })?;
    Ok(ty.bind(py).clone())
}

fn checkpoint_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    file_error_type(py, &CHECKPOINT_ERROR, "CheckpointError", "A checkpoint file is missing, truncated or inconsistent.")
}

fn config_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    file_error_type(py, &CONFIG_ERROR, "ConfigError", "A config file is unreadable or holds unsupported values.")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RioError", py.get_type::<RioError>())?;
    m.add("CheckpointError", checkpoint_error(py)?)?;
    m.add("ConfigError", config_error(py)?)?;
    Ok(())
}

/// Maps a core error to the Python exception a user expects.
pub fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    let file_error = |make: fn(Python<'_>) -> PyResult<Bound<'_, PyType>>| {
        Python::attach(|py| match make(py) {
            Ok(ty) => PyErr::from_type(ty, msg.clone()),
            Err(e) => e,
        })
    };
    match err {
        Error::Shape { .. } | Error::Value { .. } => PyValueError::new_err(msg),
        Error::DType { .. } => PyTypeError::new_err(msg),
        Error::Checkpoint { .. } => file_error(checkpoint_error),
        Error::Config { .. } => file_error(config_error),
        Error::Unsupported(_) => PyNotImplementedError::new_err(msg),
    }
}
