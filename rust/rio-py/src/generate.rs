//! `_rio_rt.generate`: the decode loop over a batch of prompts (rio_generate::generate). The GIL
//! is released for the whole loop and taken back only inside the Python callbacks: a Python
//! decoder (for text and stop strings; the native tokenizer decodes without it) and the per-step
//! observer (streaming, research callbacks).
//! `rio_rt.Model.generate` in python/rio_rt/model.py is the typed face of this function.
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rio_core::Error;
use rio_generate::controller::{Controller, Explicit, Steer};
use rio_generate::generate::{generate as run_generate, GenerateOptions, Observer, Output, Request, StepEvent};
use rio_generate::sampling::SamplingParams;
use rio_generate::trace::{Switch, TraceRow};

use crate::errors::to_py;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(generate, m)?)?;
    m.add_function(wrap_pyfunction!(generation_defaults, m)?)?;
    Ok(())
}

/// Generates a batch. `params[i]` is a dict with every `SamplingParams` field for `prompts[i]`.
/// `decode` enables text and stop strings: a native `Tokenizer` (decoded in Rust, special tokens
/// skipped) or a callable `decode(ids) -> str`. `observer(events)` is called once per
/// step with a list of event tuples `(request, step, token_id, logprob, text_delta,
/// finish_reason, mode, trace_row)` and may return `[(request, "stop" | "switch"), ...]`.
/// Returns one dict per prompt: token_ids, logprobs, top_logprobs, finish_reason, text, trace.
#[pyfunction]
#[pyo3(signature = (model, prompts, params, *, decode=None, reasoning=None, trace=false, observer=None))]
#[allow(clippy::too_many_arguments)]
fn generate(
    py: Python<'_>,
    model: &Bound<'_, Model>,
    prompts: Vec<Vec<u32>>,
    params: Vec<Bound<'_, PyDict>>,
    decode: Option<Py<PyAny>>,
    reasoning: Option<Bound<'_, PyAny>>,
    trace: bool,
    observer: Option<Py<PyAny>>,
) -> PyResult<Vec<Py<PyAny>>> {
    if prompts.len() != params.len() {
        return Err(PyValueError::new_err(format!("params: {} prompts but {} parameter sets", prompts.len(), params.len())));
    }
    let model = model.get().inner.clone();
    let lm = model.as_lm();
    let controllers: Vec<Box<dyn Controller>> = match &reasoning {
        Some(reasoning) => crate::reasoning::controllers(py, reasoning, prompts.len(), lm)?,
        None => prompts.iter().map(|_| Box::new(Explicit) as Box<dyn Controller>).collect(),
    };
    let requests = prompts
        .into_iter()
        .zip(&params)
        .zip(controllers)
        .map(|((prompt, params), controller)| {
            // Plain decoding has no trace rows: traces are kept for reasoning runs only.
            Ok(Request { prompt, params: params_from_dict(params)?, controller, trace: trace && reasoning.is_some() })
        })
        .collect::<PyResult<Vec<_>>>()?;

    // Python errors raised inside the callbacks, re-raised as they are once the loop has ended.
    let decode_error: Mutex<Option<PyErr>> = Mutex::new(None);
    let text_decoder = decode.map(|d| TextDecoder::new(py, d));
    let decoder = |ids: &[u32]| -> rio_core::Result<String> {
        match text_decoder.as_ref().expect("the decoder is only installed with a decode argument") {
            TextDecoder::Native(tokenizer) => tokenizer.decode(ids, true),
            TextDecoder::Python(decode) => Python::attach(|py| decode.call1(py, (ids.to_vec(),))?.extract::<String>(py)).map_err(|e| {
                let message = e.to_string();
                *decode_error.lock().unwrap() = Some(e);
                Error::value("decode", message)
            }),
        }
    };
    let options = GenerateOptions { eos_token_ids: None, decoder: text_decoder.as_ref().map(|_| &decoder as _) };
    let mut observer = observer.map(|callback| PyObserver { callback, error: None });
    let result = py.detach(|| run_generate(lm, requests, &options, observer.as_mut().map(|o| o as &mut dyn Observer)));
    let outputs = match result {
        Ok(outputs) => outputs,
        Err(err) => {
            let raised = observer.and_then(|o| o.error).or_else(|| decode_error.lock().unwrap().take());
            return Err(raised.unwrap_or_else(|| to_py(err)));
        }
    };
    outputs.iter().map(|o| output_to_py(py, o)).collect()
}

/// What turns generated ids into text (text deltas and stop strings), twice per token.
enum TextDecoder {
    /// A native `rio_rt._rio_rt.Tokenizer`: decoded in Rust without taking the GIL back,
    /// special tokens skipped.
    Native(rio_tokenizer::Tokenizer),
    /// Any other `decode(ids) -> str` callable, called with the GIL taken back.
    Python(Py<PyAny>),
}

impl TextDecoder {
    fn new(py: Python<'_>, decode: Py<PyAny>) -> TextDecoder {
        match decode.bind(py).cast::<Tokenizer>() {
            Ok(tokenizer) => TextDecoder::Native(tokenizer.get().inner.clone()),
            Err(_) => TextDecoder::Python(decode),
        }
    }
}

/// The sampling defaults in the checkpoint's generation_config.json (None where it has none).
#[pyfunction]
fn generation_defaults<'py>(py: Python<'py>, model: &Bound<'py, Model>) -> PyResult<Bound<'py, PyDict>> {
    let model = model.get().inner.clone();
    let g = model.as_lm().generation_config();
    let d = PyDict::new(py);
    d.set_item("do_sample", g.do_sample)?;
    d.set_item("temperature", g.temperature)?;
    d.set_item("top_k", g.top_k)?;
    d.set_item("top_p", g.top_p)?;
    d.set_item("min_p", g.min_p)?;
    d.set_item("repetition_penalty", g.repetition_penalty)?;
    Ok(d)
}

fn params_from_dict(d: &Bound<'_, PyDict>) -> PyResult<SamplingParams> {
    fn get<'py, T: for<'a> FromPyObject<'a, 'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T>
    where
        for<'a> <T as FromPyObject<'a, 'py>>::Error: Into<PyErr>,
    {
        let value = d.get_item(key)?.ok_or_else(|| PyValueError::new_err(format!("params: missing {key:?}")))?;
        value.extract::<T>().map_err(|e| {
            let e: PyErr = e.into();
            PyValueError::new_err(format!("{key}: {e}"))
        })
    }
    let params = SamplingParams {
        temperature: get(d, "temperature")?,
        top_k: get(d, "top_k")?,
        top_p: get(d, "top_p")?,
        min_p: get(d, "min_p")?,
        repetition_penalty: get(d, "repetition_penalty")?,
        presence_penalty: get(d, "presence_penalty")?,
        frequency_penalty: get(d, "frequency_penalty")?,
        max_new_tokens: get(d, "max_new_tokens")?,
        stop_token_ids: get(d, "stop_token_ids")?,
        stop_strings: get(d, "stop_strings")?,
        seed: get(d, "seed")?,
        logprobs: get(d, "logprobs")?,
        ignore_eos: get(d, "ignore_eos")?,
    };
    params.validate().map_err(to_py)?;
    Ok(params)
}

fn output_to_py(py: Python<'_>, o: &Output) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item("token_ids", &o.token_ids)?;
    d.set_item("logprobs", &o.logprobs)?;
    d.set_item("top_logprobs", &o.top_logprobs)?;
    d.set_item("finish_reason", o.finish_reason.as_str())?;
    d.set_item("text", &o.text)?;
    let trace = match &o.trace {
        Some(trace) => Some(crate::reasoning::trace_to_py(py, trace)?),
        None => None,
    };
    d.set_item("trace", trace)?;
    Ok(d.into_any().unbind())
}

fn trace_row_to_py<'py>(py: Python<'py>, row: &TraceRow) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("step", row.step)?;
    d.set_item("mode", row.mode.as_str())?;
    d.set_item("entropy", row.entropy)?;
    d.set_item("ref_entropy", (!row.ref_entropy.is_nan()).then_some(row.ref_entropy))?;
    let switched = row.switched.map(|s| match s {
        Switch::ToExplicit => "to_explicit",
        Switch::ToLatent => "to_latent",
    });
    d.set_item("switched", switched)?;
    d.set_item("injected", row.injected)?;
    d.set_item("token_id", row.token_id)?;
    d.set_item("token_prob", row.token_prob)?;
    d.set_item("fed_soft", row.fed_soft)?;
    Ok(d)
}

/// Calls a Python `observer(events)` with the GIL taken back for the call only.
struct PyObserver {
    callback: Py<PyAny>,
    /// The exception the callback raised, re-raised unchanged after the loop.
    error: Option<PyErr>,
}

impl PyObserver {
    fn call(&self, py: Python<'_>, events: &[StepEvent]) -> PyResult<Vec<(usize, Steer)>> {
        let list = PyList::empty(py);
        for e in events {
            let trace = e.trace.as_ref().map(|row| trace_row_to_py(py, row)).transpose()?;
            let finish = e.finish_reason.map(|f| f.as_str());
            list.append((e.request, e.step, e.token_id, e.logprob, e.text_delta.as_deref(), finish, e.mode, trace))?;
        }
        let answer = self.callback.call1(py, (list,))?;
        let requests: Option<Vec<(usize, String)>> = answer.extract(py)?;
        requests
            .unwrap_or_default()
            .into_iter()
            .map(|(request, steer)| match steer.as_str() {
                "stop" => Ok((request, Steer::Stop)),
                "switch" => Ok((request, Steer::ForceSwitch)),
                other => Err(PyValueError::new_err(format!("callback: expected None, \"stop\" or \"switch\", got {other:?}"))),
            })
            .collect()
    }
}

impl Observer for PyObserver {
    fn on_step(&mut self, events: &[StepEvent]) -> rio_core::Result<Vec<(usize, Steer)>> {
        Python::attach(|py| self.call(py, events)).map_err(|e| {
            let message = e.to_string();
            self.error = Some(e);
            Error::value("callback", message)
        })
    }
}
