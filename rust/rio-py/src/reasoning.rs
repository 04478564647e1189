//! Latent-reasoning controllers from `rio_rt.SwiReasoning` / `rio_rt.SoftThinking` objects
//! (python/rio_rt/reasoning.py resolves their special tokens first), and traces back to Python.
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rio_generate::controller::Controller;
use rio_generate::soft_thinking::{ConceptNoise, SoftThinking, SoftThinkingConfig};
use rio_generate::swireasoning::{SoftForm, SwiReasoning, SwiReasoningConfig};
use rio_generate::trace::{Switch, Trace};
use rio_model::CausalLm;

use crate::arrays::borrow;
use crate::errors::to_py;
use crate::model::Model;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(latent_step_cost, m)?)?;
    Ok(())
}

/// Seconds one latent step's extra work takes on `model`'s embedding table, per form, for a
/// logit row `logits` (float32 `(V,)`): the softmax with entropy, then the soft embedding
/// (`"full"`, `"pruned"` with the default skipped mass, or `"topk"` with K = `top_k`). The mean
/// over `repeats` calls, with the GIL released. For `rio-rt bench latent`.
#[pyfunction]
#[pyo3(signature = (model, logits, form, repeats=20, top_k=10))]
fn latent_step_cost(py: Python<'_>, model: &Model, logits: &Bound<'_, PyAny>, form: &str, repeats: usize, top_k: usize) -> PyResult<f64> {
    use rio_cpu::ops::soft_embedding as se;
    let lm = model.inner.as_lm();
    let z = borrow(logits, "logits", &[rio_core::DType::F32])?;
    let z: Vec<f32> = z.view().as_slice::<f32>().ok_or_else(|| PyValueError::new_err("logits: must be contiguous"))?.to_vec();
    if z.len() != lm.vocab_size() {
        return Err(PyValueError::new_err(format!("logits: expected {} values, got {}", lm.vocab_size(), z.len())));
    }
    if !matches!(form, "full" | "pruned" | "topk") {
        return Err(PyValueError::new_err(format!("form: expected 'full', 'pruned' or 'topk', got {form:?}")));
    }
    let e = lm.embedding_table();
    let norm = se::max_row_norm(&e).map_err(to_py)?;
    let repeats = repeats.max(1);
    py.detach(|| {
        let mut probs = vec![0.0f32; z.len()];
        let mut out = vec![0.0f32; lm.hidden_size()];
        let cfg = SoftThinkingConfig { top_k, ..SoftThinkingConfig::new(0) };
        let start = std::time::Instant::now();
        for _ in 0..repeats {
            match form {
                "full" => {
                    se::softmax_entropy(&z, 1.0, &mut probs)?;
                    se::soft_embedding_full(&probs, &e, &mut out)?;
                }
                "pruned" => {
                    se::softmax_entropy(&z, 1.0, &mut probs)?;
                    se::soft_embedding_pruned(&probs, &e, norm, rio_generate::swireasoning::DEFAULT_MAX_SKIPPED_MASS, &mut out)?;
                }
                _ => {
                    se::softmax_entropy(&z, cfg.temperature, &mut probs)?;
                    let c = SoftThinking::concept(&probs, &cfg);
                    se::soft_embedding_topk(&c.ids, &c.weights, &e, &mut out)?;
                }
            }
        }
        Ok(start.elapsed().as_secs_f64() / repeats as f64)
    })
    .map_err(to_py)
}

/// `getattr(obj, name)` as `T`; a missing or mistyped field names itself.
fn field<'py, T: for<'a> FromPyObject<'a, 'py>>(obj: &Bound<'py, PyAny>, kind: &str, name: &str) -> PyResult<T> {
    let value = obj.getattr(name)?;
    value.extract::<T>().map_err(|_| PyTypeError::new_err(format!("{kind}.{name}: unexpected value {value}")))
}

/// A special token id that must have been given or resolved from the tokenizer.
fn token_id(obj: &Bound<'_, PyAny>, kind: &str, name: &str) -> PyResult<u32> {
    field::<Option<u32>>(obj, kind, name)?.ok_or_else(|| {
        PyValueError::new_err(format!(
            "{kind}.{name}: not given, and not resolved from a tokenizer (pass the id, or pass the object through \
             rio_rt.reasoning.resolve_reasoning with a model that has a tokenizer)"
        ))
    })
}

/// One controller per request, all from the same parameters.
pub(crate) fn controllers(
    _py: Python<'_>,
    reasoning: &Bound<'_, PyAny>,
    n_requests: usize,
    model: &dyn CausalLm,
) -> PyResult<Vec<Box<dyn Controller>>> {
    let kind: String = reasoning
        .getattr("kind")
        .and_then(|k| k.extract())
        .map_err(|_| PyTypeError::new_err("reasoning: expected rio_rt.SwiReasoning, rio_rt.SoftThinking or None"))?;
    let vocab = model.vocab_size();
    match kind.as_str() {
        "swireasoning" => {
            let k = "SwiReasoning";
            let think = token_id(reasoning, k, "think_token_id")?;
            let end_think = token_id(reasoning, k, "end_think_token_id")?;
            let max_switch_count: Option<usize> = field(reasoning, k, "max_switch_count")?;
            let ids = |name: &str| -> PyResult<Option<Vec<u32>>> { field(reasoning, k, name) };
            let convergence = ids("convergence_token_ids")?.unwrap_or_else(|| vec![end_think]);
            let termination =
                match ids("termination_token_ids")? {
                    Some(t) => t,
                    None if max_switch_count.is_some() => return Err(PyValueError::new_err(
                        "SwiReasoning.termination_token_ids: switch-count control needs the ids of \"</think>\\n\\nThe final answer is\" \
                         (pass them, or use a model with a tokenizer)",
                    )),
                    None => vec![end_think],
                };
            let faithful: bool = field(reasoning, k, "faithful")?;
            let soft_form = match field::<String>(reasoning, k, "soft_form")?.as_str() {
                "full" => SoftForm::Full,
                "auto" if faithful => SoftForm::Full,
                "pruned" | "auto" => SoftForm::Pruned { max_skipped_mass: field(reasoning, k, "pruned_mass")? },
                other => {
                    return Err(PyValueError::new_err(format!(
                        "SwiReasoning.soft_form: expected 'auto', 'full' or 'pruned', got {other:?}"
                    )))
                }
            };
            let mut cfg = SwiReasoningConfig {
                window: field(reasoning, k, "window")?,
                alpha0: field(reasoning, k, "alpha0")?,
                beta0: field(reasoning, k, "beta0")?,
                max_switch_count,
                think_token_id: think,
                end_think_token_id: end_think,
                convergence_token_ids: convergence,
                termination_token_ids: termination,
                termination_max_tokens: field(reasoning, k, "termination_max_tokens")?,
                step0_token_id: field(reasoning, k, "step0_token_id")?,
                math_token_ids: ids("math_token_ids")?.unwrap_or_default(),
                soft_form,
                start_explicit: field(reasoning, k, "start_explicit")?,
                faithful,
                max_row_norm: None,
            };
            cfg.validate(vocab).map_err(to_py)?;
            if matches!(cfg.soft_form, SoftForm::Pruned { .. }) {
                // Once for the whole batch: it reads all of E.
                let norm = rio_cpu::ops::soft_embedding::max_row_norm(&model.embedding_table()).map_err(to_py)?;
                cfg.max_row_norm = Some(norm);
            }
            Ok((0..n_requests).map(|_| Box::new(SwiReasoning::new(cfg.clone())) as Box<dyn Controller>).collect())
        }
        "soft_thinking" => {
            let k = "SoftThinking";
            let dirichlet: Option<f32> = field(reasoning, k, "dirichlet_alpha")?;
            let gumbel: Option<f32> = field(reasoning, k, "gumbel_tau")?;
            let noise = match (dirichlet, gumbel) {
                (Some(_), Some(_)) => return Err(PyValueError::new_err("SoftThinking: dirichlet_alpha and gumbel_tau exclude each other")),
                (Some(alpha), None) => Some(ConceptNoise::Dirichlet { alpha }),
                (None, Some(tau)) => Some(ConceptNoise::Gumbel { tau }),
                (None, None) => None,
            };
            let noise_seed: Option<u64> = field(reasoning, k, "noise_seed")?;
            let cfg = SoftThinkingConfig {
                top_k: field(reasoning, k, "top_k")?,
                filter_top_k: field(reasoning, k, "filter_top_k")?,
                top_p: field(reasoning, k, "top_p")?,
                min_p: field(reasoning, k, "min_p")?,
                temperature: field(reasoning, k, "temperature")?,
                cold_stop_entropy: field(reasoning, k, "cold_stop_entropy")?,
                cold_stop_steps: field(reasoning, k, "cold_stop_steps")?,
                end_think_token_id: token_id(reasoning, k, "end_think_token_id")?,
                noise,
                noise_seed,
                start_explicit: field(reasoning, k, "start_explicit")?,
            };
            cfg.validate(vocab).map_err(to_py)?;
            // Each sequence of a batch gets its own noise stream.
            Ok((0..n_requests)
                .map(|i| {
                    let seed = noise_seed.map(|s| s.wrapping_add(i as u64 * 0x9E37_79B9_7F4A_7C15));
                    Box::new(SoftThinking::new(SoftThinkingConfig { noise_seed: seed, ..cfg.clone() })) as Box<dyn Controller>
                })
                .collect())
        }
        other => Err(PyTypeError::new_err(format!("reasoning: unknown kind {other:?}"))),
    }
}

/// A trace as a dict of equal-length lists (`rio_rt.reasoning.Trace.from_dict` wraps it).
pub(crate) fn trace_to_py(py: Python<'_>, trace: &Trace) -> PyResult<Py<PyAny>> {
    let rows = &trace.rows;
    let d = PyDict::new(py);
    d.set_item("step", PyList::new(py, rows.iter().map(|r| r.step))?)?;
    d.set_item("mode", PyList::new(py, rows.iter().map(|r| r.mode.as_str()))?)?;
    d.set_item("entropy", PyList::new(py, rows.iter().map(|r| r.entropy as f64))?)?;
    let nan_to_none = |v: f32| if v.is_nan() { None } else { Some(v as f64) };
    d.set_item("ref_entropy", PyList::new(py, rows.iter().map(|r| nan_to_none(r.ref_entropy)))?)?;
    let switched = rows.iter().map(|r| {
        r.switched.map(|s| match s {
            Switch::ToExplicit => "to_explicit",
            Switch::ToLatent => "to_latent",
        })
    });
    d.set_item("switched", PyList::new(py, switched)?)?;
    d.set_item("injected", PyList::new(py, rows.iter().map(|r| r.injected))?)?;
    d.set_item("token_id", PyList::new(py, rows.iter().map(|r| r.token_id))?)?;
    d.set_item("token_prob", PyList::new(py, rows.iter().map(|r| r.token_prob as f64))?)?;
    d.set_item("fed_soft", PyList::new(py, rows.iter().map(|r| r.fed_soft))?)?;
    Ok(d.into_any().unbind())
}
