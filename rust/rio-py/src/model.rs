//! rio_rt.Model bindings: load a Qwen3.5-MoE or Qwen3-MoE checkpoint folder (picked by
//! `model_type`) and run forward passes.
//!
//! `forward` takes token ids `(T,)` / `(B, T)` (int32/int64) or input embeddings `(T, H)` /
//! `(B, T, H)` (float32) and returns float32 logits `(T, V)` / `(B, T, V)` of the input's kind
//! (numpy or torch). A `ModelCache` carries one sequence across calls; batches run each row from
//! an empty cache.
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use rio_core::DType;
use rio_model::cache::ModelCache;
use rio_model::layers::Input;
use rio_model::AnyModel;

use crate::arrays::{borrow, ArrayKind};
use crate::dlpack::NativeTensor;
use crate::errors::to_py;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Cache>()?;
    Ok(())
}

/// A loaded text model of one of the supported architectures, its weights read in place from
/// the memory-mapped checkpoint.
#[pyclass(module = "rio_rt._rio_rt", frozen)]
pub(crate) struct Model {
    pub(crate) inner: Arc<AnyModel>,
}

/// The decoding state of one sequence (KV caches, Gated DeltaNet states).
#[pyclass(module = "rio_rt._rio_rt", name = "ModelCache")]
pub(crate) struct Cache {
    pub(crate) inner: ModelCache,
}

#[pymethods]
impl Cache {
    /// Tokens seen so far.
    #[getter]
    fn position(&self) -> usize {
        self.inner.position()
    }
}

/// One sequence's input, owned so that the GIL can be released while it runs.
enum Rows {
    Tokens(Vec<u32>),
    Embeddings(Vec<f32>),
}

impl Rows {
    fn input(&self) -> Input<'_> {
        match self {
            Rows::Tokens(t) => Input::Tokens(t),
            Rows::Embeddings(e) => Input::Embeddings(e),
        }
    }
}

#[pymethods]
impl Model {
    #[staticmethod]
    #[pyo3(signature = (path, dtype="auto"))]
    fn load(py: Python<'_>, path: PathBuf, dtype: &str) -> PyResult<Model> {
        let model = py.detach(|| AnyModel::from_dir_with(&path, dtype)).map_err(to_py)?;
        Ok(Model { inner: Arc::new(model) })
    }

    /// ``(inv_freq, attention_scaling)`` of the attention layers' RoPE (YaRN included).
    fn rope(&self) -> (Vec<f32>, f32) {
        self.inner.rope()
    }

    /// The dtype the forward computes in: ``"bfloat16"`` or ``"float32"``.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.precision().name()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.as_lm().vocab_size()
    }

    #[getter]
    fn hidden_size(&self) -> usize {
        self.inner.as_lm().hidden_size()
    }

    #[getter]
    fn num_layers(&self) -> usize {
        self.inner.as_lm().num_layers()
    }

    #[getter]
    fn model_type(&self) -> &'static str {
        self.inner.as_lm().model_type()
    }

    #[getter]
    fn eos_token_ids(&self) -> Vec<u32> {
        self.inner.as_lm().eos_token_ids()
    }

    fn new_cache(&self) -> Cache {
        Cache { inner: self.inner.as_lm().new_cache() }
    }

    /// One step for several sequences: `ids[b]` (1-D int ids, lengths may differ) continues
    /// `caches[b]`. Returns float32 logits `(B, V)` of each sequence's last new position.
    fn forward_batch<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<Bound<'py, PyAny>>,
        caches: Vec<Bound<'py, Cache>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let v = self.inner.as_lm().vocab_size();
        if ids.len() != caches.len() || ids.is_empty() {
            return Err(PyValueError::new_err(format!("forward_batch: {} id arrays need as many caches, got {}", ids.len(), caches.len())));
        }
        let mut tokens = Vec::with_capacity(ids.len());
        for (b, seq) in ids.iter().enumerate() {
            let arg = format!("ids[{b}]");
            let t = borrow(seq, &arg, &[DType::I32, DType::I64])?;
            if t.shape().len() != 1 || t.shape()[0] == 0 {
                return Err(PyValueError::new_err(format!(
                    "{arg}: expected a non-empty 1-D array of token ids, got shape {:?}",
                    t.shape()
                )));
            }
            let all = t.to_i64_vec();
            if let Some((i, bad)) = all.iter().enumerate().find(|(_, &x)| x < 0 || x as u64 >= v as u64) {
                return Err(PyValueError::new_err(format!("{arg}: token id {bad} at index {i} is outside the vocabulary of {v}")));
            }
            tokens.push(all.into_iter().map(|x| x as u32).collect::<Vec<u32>>());
        }
        let mut borrowed = caches
            .iter()
            .map(|c| c.try_borrow_mut().map_err(|_| PyValueError::new_err("caches: a cache is given twice or is in use by another call")))
            .collect::<PyResult<Vec<_>>>()?;
        let mut states: Vec<&mut ModelCache> = borrowed.iter_mut().map(|c| &mut c.inner).collect();
        let inputs: Vec<Input<'_>> = tokens.iter().map(|t| Input::Tokens(t)).collect();
        let model = self.inner.clone();
        let logits = py.detach(|| model.as_lm().forward_batch(&inputs, &mut states)).map_err(to_py)?;
        ArrayKind::of(&ids[0]).wrap(py, NativeTensor::from_vec(logits, &[ids.len(), v]))
    }

    #[pyo3(signature = (ids=None, *, input_embeds=None, cache=None, logits_to_keep=0))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        ids: Option<Bound<'py, PyAny>>,
        input_embeds: Option<Bound<'py, PyAny>>,
        cache: Option<Bound<'py, Cache>>,
        logits_to_keep: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (v, h) = (self.inner.as_lm().vocab_size(), self.inner.as_lm().hidden_size());
        let (kind, batch, rows) = match (&ids, &input_embeds) {
            (Some(ids), None) => {
                let t = borrow(ids, "ids", &[DType::I32, DType::I64])?;
                let (batch, len) = match *t.shape() {
                    [len] => (None, len),
                    [b, len] => (Some(b), len),
                    _ => return Err(PyValueError::new_err(format!("ids: expected shape (T,) or (B, T), got {:?}", t.shape()))),
                };
                let all = t.to_i64_vec();
                if let Some((i, bad)) = all.iter().enumerate().find(|(_, &x)| x < 0 || x as u64 >= v as u64) {
                    return Err(PyValueError::new_err(format!("ids: token id {bad} at flat index {i} is outside the vocabulary of {v}")));
                }
                let tokens: Vec<u32> = all.into_iter().map(|x| x as u32).collect();
                let rows = tokens.chunks(len.max(1)).map(|r| Rows::Tokens(r.to_vec())).collect::<Vec<_>>();
                (ArrayKind::of(ids), batch.map(|b| (b, len)), rows)
            }
            (None, Some(emb)) => {
                let t = borrow(emb, "input_embeds", &[DType::F32])?;
                let (batch, len) = match *t.shape() {
                    [len, hh] if hh == h => (None, len),
                    [b, len, hh] if hh == h => (Some(b), len),
                    _ => {
                        return Err(PyValueError::new_err(format!(
                            "input_embeds: expected shape (T, {h}) or (B, T, {h}) (hidden_size {h}), got {:?}",
                            t.shape()
                        )))
                    }
                };
                let flat = t.view().to_contiguous();
                let rows = flat.as_slice::<f32>().chunks((len * h).max(1)).map(|r| Rows::Embeddings(r.to_vec())).collect::<Vec<_>>();
                (ArrayKind::of(emb), batch.map(|b| (b, len)), rows)
            }
            _ => return Err(PyTypeError::new_err("forward: give exactly one of ids and input_embeds")),
        };
        if rows.is_empty() && batch.is_none() || batch.is_some_and(|(_, len)| len == 0) {
            return Err(PyValueError::new_err("forward: needs at least one token per sequence"));
        }
        let model = self.inner.clone();
        let model = model.as_lm();
        let logits = match (batch, cache) {
            (None, Some(cache)) => {
                let mut c = cache.try_borrow_mut().map_err(|_| PyValueError::new_err("cache: already in use by another forward call"))?;
                let state = &mut c.inner;
                py.detach(|| model.forward(rows[0].input(), state, logits_to_keep)).map_err(to_py)?
            }
            (None, None) => py.detach(|| model.forward(rows[0].input(), &mut model.new_cache(), logits_to_keep)).map_err(to_py)?,
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err("cache: a cache carries one sequence; pass 1-D ids or 2-D input_embeds with it"))
            }
            // Only the last position kept: one batched run (projections and MoE over all rows).
            (Some((_, len)), None) if !rows.is_empty() && (logits_to_keep == 1 || len == 1) => py
                .detach(|| {
                    let mut fresh: Vec<_> = rows.iter().map(|_| model.new_cache()).collect();
                    let inputs: Vec<_> = rows.iter().map(Rows::input).collect();
                    model.forward_batch(&inputs, &mut fresh.iter_mut().collect::<Vec<_>>())
                })
                .map_err(to_py)?,
            // forward_batch returns last positions only; more kept positions run row by row.
            (Some(_), None) => py
                .detach(|| {
                    rows.iter()
                        .map(|r| model.forward(r.input(), &mut model.new_cache(), logits_to_keep))
                        .collect::<rio_core::Result<Vec<_>>>()
                })
                .map_err(to_py)?
                .concat(),
        };
        let shape = match batch {
            None => vec![logits.len() / v, v],
            Some((b, len)) => vec![b, if logits_to_keep == 0 { len } else { logits_to_keep.min(len) }, v],
        };
        kind.wrap(py, NativeTensor::from_vec(logits, &shape))
    }
}
