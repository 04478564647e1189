//! rio_rt.provenance bindings: blend fits of a checkpoint against candidate parents.
use std::collections::HashMap;
use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rio_provenance::{Options, Progress, Thresholds};

use crate::errors::to_py;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(provenance_fit, m)?)?;
    Ok(())
}

/// Overrides the named thresholds; unknown names are an error listing the known ones.
fn thresholds(overrides: HashMap<String, f64>) -> PyResult<Thresholds> {
    let mut t = Thresholds::default();
    for (name, value) in overrides {
        let slot = match name.as_str() {
            "identical" => &mut t.identical,
            "explained" => &mut t.explained,
            "coefficient_outlier" => &mut t.coefficient_outlier,
            "blend_share" => &mut t.blend_share,
            "material_coefficient" => &mut t.material_coefficient,
            "finetune_cosine" => &mut t.finetune_cosine,
            "finetune_r2" => &mut t.finetune_r2,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "thresholds: unknown name {name:?}; expected identical, explained, coefficient_outlier, \
                     blend_share, material_coefficient, finetune_cosine or finetune_r2"
                )))
            }
        };
        if !value.is_finite() || value < 0.0 {
            return Err(PyValueError::new_err(format!("thresholds[{name:?}]: expected a finite value >= 0, got {value}")));
        }
        *slot = value;
    }
    Ok(t)
}

/// Fits `candidate` as a blend of `parents`; returns the report as JSON. `progress(done, total,
/// name, bytes_done, bytes_total)` is called before each tensor; an exception it raises stops the
/// fit and is re-raised.
#[pyfunction]
#[pyo3(signature = (candidate, parents, *, quick=false, sample=65536, seed=0, intercept=false, thresholds=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn provenance_fit(
    py: Python<'_>,
    candidate: PathBuf,
    parents: Vec<PathBuf>,
    quick: bool,
    sample: usize,
    seed: u64,
    intercept: bool,
    thresholds: Option<HashMap<String, f64>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let opts = Options { quick, sample, seed, intercept, thresholds: self::thresholds(thresholds.unwrap_or_default())? };
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        let parent_refs: Vec<&std::path::Path> = parents.iter().map(PathBuf::as_path).collect();
        // Between tensors: let Ctrl-C through, then report progress; either may stop the fit.
        let mut report_progress = |p: &Progress<'_>| -> bool {
            let outcome = Python::attach(|py| {
                py.check_signals()?;
                match &progress {
                    Some(callback) => callback.call1(py, (p.done, p.total, p.name, p.bytes_done, p.bytes_total)).map(drop),
                    None => Ok(()),
                }
            });
            outcome.map_err(|e| raised = Some(e)).is_ok()
        };
        rio_provenance::fit(&candidate, &parent_refs, &opts, &mut report_progress).map(|r| r.to_json())
    });
    if let Some(e) = raised {
        return Err(e);
    }
    result.map_err(to_py)
}
