//! rio_rt.Tokenizer bindings: a checkpoint folder's tokenizer and chat template (rio-tokenizer),
//! the streaming decoder, and the byte-level BPE trainer `rio-rt demo` uses.
use std::path::PathBuf;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use rio_tokenizer::train::{train_byte_level_bpe, ExtraToken};
use rio_tokenizer::{map_value, NamedToken, Value};

use crate::errors::to_py;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Tokenizer>()?;
    m.add_class::<IncrementalDecoder>()?;
    m.add_function(wrap_pyfunction!(train_bpe_tokenizer, m)?)?;
    Ok(())
}

/// A checkpoint's tokenizer (`tokenizer.json`, `tokenizer_config.json`, chat template).
#[pyclass(module = "rio_rt._rio_rt", frozen)]
pub(crate) struct Tokenizer {
    pub(crate) inner: rio_tokenizer::Tokenizer,
}

/// Streams the text of a growing id sequence as deltas that never split a character.
#[pyclass(module = "rio_rt._rio_rt")]
pub(crate) struct IncrementalDecoder {
    inner: rio_tokenizer::IncrementalDecoder,
}

/// Token ids from a Python sequence of ints, each in `0..2^32`.
fn token_ids(ids: &Bound<'_, PyAny>, arg: &str) -> PyResult<Vec<u32>> {
    let raw: Vec<i64> = ids.extract().map_err(|_| PyTypeError::new_err(format!("{arg}: expected a sequence of ints")))?;
    raw.into_iter()
        .map(|id| u32::try_from(id).map_err(|_| PyValueError::new_err(format!("{arg}: token id {id} is out of range"))))
        .collect()
}

/// A template value from plain Python data (None, bool, int, float, str, list, tuple, dict), as
/// transformers hands chat templates only plain JSON-like data; `path` names the item in errors.
fn template_value(obj: &Bound<'_, PyAny>, path: &str) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::from(()));
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::from(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        let n: i128 = obj.extract().map_err(|_| PyValueError::new_err(format!("{path}: integer too large")))?;
        return Ok(Value::from(n));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::from(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::from(s.to_str()?.to_string()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = template_value(&k, path)?;
            let shown = format!("{path}[{}]", k.repr()?);
            entries.push((key, template_value(&v, &shown)?));
        }
        return Ok(map_value(entries));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items =
            obj.try_iter()?.enumerate().map(|(i, item)| template_value(&item?, &format!("{path}[{i}]"))).collect::<PyResult<Vec<_>>>()?;
        return Ok(Value::from(items));
    }
    // numpy scalars become the Python number they hold, as transformers does.
    if obj.get_type().module().is_ok_and(|m| m.to_str().is_ok_and(|m| m == "numpy"))
        && obj.getattr("ndim").is_ok_and(|n| n.eq(0).unwrap_or(false))
    {
        return template_value(&obj.call_method0("item")?, path);
    }
    Err(PyTypeError::new_err(format!(
        "{path}: chat templates take None, bool, int, float, str, list and dict values, got {}",
        obj.get_type().name()?
    )))
}

fn text(token: &Option<NamedToken>) -> Option<String> {
    token.as_ref().map(|t| t.text.clone())
}

fn id(token: &Option<NamedToken>) -> Option<u32> {
    token.as_ref().map(|t| t.id)
}

#[pymethods]
impl Tokenizer {
    /// The tokenizer of a checkpoint folder, or None when it has no `tokenizer.json`.
    #[staticmethod]
    fn from_dir(py: Python<'_>, path: PathBuf) -> PyResult<Option<Tokenizer>> {
        let inner = py.detach(|| rio_tokenizer::Tokenizer::from_dir(&path)).map_err(to_py)?;
        Ok(inner.map(|inner| Tokenizer { inner }))
    }

    #[pyo3(signature = (text, add_special_tokens=true))]
    fn encode(&self, py: Python<'_>, text: &str, add_special_tokens: bool) -> PyResult<Vec<u32>> {
        py.detach(|| self.inner.encode(text, add_special_tokens)).map_err(to_py)
    }

    #[pyo3(signature = (ids, skip_special_tokens=false))]
    fn decode(&self, py: Python<'_>, ids: &Bound<'_, PyAny>, skip_special_tokens: bool) -> PyResult<String> {
        let ids = token_ids(ids, "ids")?;
        py.detach(|| self.inner.decode(&ids, skip_special_tokens)).map_err(to_py)
    }

    #[pyo3(signature = (skip_special_tokens=false))]
    fn decoder(&self, skip_special_tokens: bool) -> IncrementalDecoder {
        IncrementalDecoder { inner: self.inner.decoder(skip_special_tokens) }
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    fn is_special(&self, id: u32) -> bool {
        self.inner.is_special(id)
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    #[getter]
    fn bos_token(&self) -> Option<String> {
        text(&self.inner.special_tokens().bos)
    }

    #[getter]
    fn eos_token(&self) -> Option<String> {
        text(&self.inner.special_tokens().eos)
    }

    #[getter]
    fn pad_token(&self) -> Option<String> {
        text(&self.inner.special_tokens().pad)
    }

    #[getter]
    fn unk_token(&self) -> Option<String> {
        text(&self.inner.special_tokens().unk)
    }

    #[getter]
    fn bos_token_id(&self) -> Option<u32> {
        id(&self.inner.special_tokens().bos)
    }

    #[getter]
    fn eos_token_id(&self) -> Option<u32> {
        id(&self.inner.special_tokens().eos)
    }

    #[getter]
    fn pad_token_id(&self) -> Option<u32> {
        id(&self.inner.special_tokens().pad)
    }

    #[getter]
    fn unk_token_id(&self) -> Option<u32> {
        id(&self.inner.special_tokens().unk)
    }

    #[getter]
    fn think_token_id(&self) -> Option<u32> {
        self.inner.special_tokens().think
    }

    #[getter]
    fn end_think_token_id(&self) -> Option<u32> {
        self.inner.special_tokens().end_think
    }

    #[getter]
    fn chat_template(&self) -> Option<String> {
        self.inner.chat_template().map(|t| t.source().to_string())
    }

    #[pyo3(signature = (messages, add_generation_prompt=false, enable_thinking=None, **kwargs))]
    fn apply_chat_template(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        if !(messages.is_instance_of::<PyList>() || messages.is_instance_of::<PyTuple>()) {
            return Err(PyTypeError::new_err(format!("messages: expected a list of dicts, got {}", messages.get_type().name()?)));
        }
        let messages = template_value(messages, "messages")?;
        let mut extra = Vec::new();
        if let Some(kwargs) = kwargs {
            for (k, v) in kwargs.iter() {
                let name: String = k.extract()?;
                let value = template_value(&v, &name)?;
                extra.push((name, value));
            }
        }
        py.detach(|| self.inner.apply_chat_template(&messages, add_generation_prompt, enable_thinking, &extra)).map_err(to_py)
    }

    fn __len__(&self) -> usize {
        self.inner.vocab_size()
    }

    fn __repr__(&self) -> String {
        format!(
            "Tokenizer(path={:?}, vocab_size={}, chat_template={})",
            self.inner.dir().display().to_string(),
            self.inner.vocab_size(),
            if self.inner.chat_template().is_some() { "True" } else { "False" }
        )
    }
}

#[pymethods]
impl IncrementalDecoder {
    /// Adds one id; returns the text it completes ("" while a character is unfinished).
    fn push(&mut self, id: u32) -> PyResult<String> {
        self.inner.push(id).map_err(to_py)
    }

    /// The text held back at the end (an unfinished character); call once after the last push.
    fn finish(&mut self) -> PyResult<String> {
        self.inner.finish().map_err(to_py)
    }
}

/// Trains a Qwen-style byte-level BPE tokenizer (the `tokenizers` crate's BpeTrainer) and returns
/// its `tokenizer.json` text. `added_tokens`: `(text, special)` pairs appended after the vocabulary.
#[pyfunction]
#[pyo3(signature = (texts, vocab_size, min_frequency=2, added_tokens=Vec::new()))]
fn train_bpe_tokenizer(
    py: Python<'_>,
    texts: Vec<String>,
    vocab_size: usize,
    min_frequency: u64,
    added_tokens: Vec<(String, bool)>,
) -> PyResult<String> {
    let extra: Vec<ExtraToken> = added_tokens.into_iter().map(|(text, special)| ExtraToken { text, special }).collect();
    py.detach(|| train_byte_level_bpe(&texts, vocab_size, min_frequency, &extra)).map_err(to_py)
}
