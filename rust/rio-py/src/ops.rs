//! rio_rt.ops bindings: MoE router, top-k softmax, dispatch, grouped GEMM, combine, whole block.
//!
//! Each function borrows its tensors (see `arrays`), validates what the core would otherwise
//! panic on, releases the GIL for the kernels, and returns results of the kind of its main input
//! (numpy in, numpy out; torch in, torch out).
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyList, PyTuple};
use rio_core::moe::{Dispatch, ExpertMats, MoeWeights, RouterConfig, Routing, SharedExpert};
use rio_core::{Backend, DType, TensorRef};
use rio_cpu::moe::{combine, router, rows};
use rio_cpu::CpuBackend;

use crate::arrays::{borrow, borrow_mut, ArrayKind, PyTensor};
use crate::dlpack::NativeTensor;
use crate::errors::to_py;

const FLOATS: [DType; 3] = [DType::BF16, DType::F16, DType::F32];
const INDICES: [DType; 2] = [DType::I32, DType::I64];

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeTensor>()?;
    m.add_function(wrap_pyfunction!(moe_router, m)?)?;
    m.add_function(wrap_pyfunction!(moe_topk_softmax, m)?)?;
    m.add_function(wrap_pyfunction!(moe_dispatch, m)?)?;
    m.add_function(wrap_pyfunction!(grouped_gemm, m)?)?;
    m.add_function(wrap_pyfunction!(moe_combine, m)?)?;
    m.add_function(wrap_pyfunction!(moe_forward, m)?)?;
    Ok(())
}

/// A positive int argument (bools are refused: `top_k=True` is a mistake, not 1).
fn positive_int(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<usize> {
    let type_error = || {
        PyTypeError::new_err(format!("{arg}: expected an int, got {}", obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()))
    };
    if obj.cast::<PyBool>().is_ok() {
        return Err(type_error());
    }
    let v: i64 = obj.extract().map_err(|_| type_error())?;
    if v < 1 {
        return Err(PyValueError::new_err(format!("{arg}: must be at least 1, got {v}")));
    }
    Ok(v as usize)
}

fn router_config(top_k: &Bound<'_, PyAny>, renormalize: bool) -> PyResult<RouterConfig> {
    Ok(RouterConfig { top_k: positive_int(top_k, "top_k")?, renormalize })
}

/// The output array: the caller's `out`, or a new one of `kind`.
fn output<'py>(
    py: Python<'py>,
    out: Option<Bound<'py, PyAny>>,
    kind: ArrayKind,
    shape: &[usize],
    dtype: DType,
) -> PyResult<Bound<'py, PyAny>> {
    match out {
        Some(o) => Ok(o),
        None => kind.empty(py, shape, dtype),
    }
}

fn routing_result<'py>(py: Python<'py>, kind: ArrayKind, routing: Routing) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let shape = [routing.num_tokens(), routing.top_k];
    let experts: Vec<i32> = routing.experts.into_iter().map(|e| e as i32).collect();
    let weights = kind.wrap(py, NativeTensor::from_vec(routing.weights, &shape))?;
    let experts = kind.wrap(py, NativeTensor::from_vec(experts, &shape))?;
    Ok((weights, experts))
}

/// `(weights [T, k] float32, experts [T, k] int32)` for `x [T, H]` and `router_weight [E, H]`.
#[pyfunction]
#[pyo3(signature = (x, router_weight, top_k, renormalize=true))]
fn moe_router<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    router_weight: &Bound<'py, PyAny>,
    top_k: &Bound<'py, PyAny>,
    renormalize: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let config = router_config(top_k, renormalize)?;
    let xt = borrow(x, "x", &FLOATS)?;
    let wt = borrow(router_weight, "router_weight", &FLOATS)?;
    let (xv, wv) = (xt.view(), wt.view());
    let routing = py.detach(|| CpuBackend.moe_route(&xv, &wv, config)).map_err(to_py)?;
    routing_result(py, ArrayKind::of(x), routing)
}

/// Softmax over each row of `logits [T, E]` in fp32, then top-k (optionally renormalised).
#[pyfunction]
#[pyo3(signature = (logits, top_k, renormalize=true))]
fn moe_topk_softmax<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    top_k: &Bound<'py, PyAny>,
    renormalize: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let config = router_config(top_k, renormalize)?;
    let lt = borrow(logits, "logits", &FLOATS)?;
    let lv = lt.view();
    if lv.ndim() != 2 {
        return Err(to_py(rio_core::Error::shape("logits", "(T, E)", lv.shape())));
    }
    let e = lv.shape()[1];
    let routing = py
        .detach(|| {
            let values = rows::gather(&lv, None, 1, DType::F32)?;
            let values = values.as_slice::<f32>();
            if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                return Err(rio_core::Error::value(
                    "logits",
                    format!("value at token {}, expert {} is {} (NaN or Inf)", bad / e, bad % e, values[bad]),
                ));
            }
            router::select_experts(values, e, config)
        })
        .map_err(to_py)?;
    routing_result(py, ArrayKind::of(logits), routing)
}

/// Expert indices as u32, checked against `0..num_experts`.
fn expert_indices(t: &PyTensor, arg: &str, num_experts: usize) -> PyResult<Vec<u32>> {
    let values = t.to_i64_vec();
    if let Some((i, v)) = values.iter().enumerate().find(|(_, &v)| v < 0 || v as u64 >= num_experts as u64) {
        return Err(PyValueError::new_err(format!("{arg}: value {v} at flat index {i} is outside 0..{num_experts} (num_experts)")));
    }
    Ok(values.into_iter().map(|v| v as u32).collect())
}

/// `(counts [E], offsets [E+1], order [T*k], position (shape of experts))`, all int32.
#[pyfunction]
fn moe_dispatch<'py>(py: Python<'py>, experts: &Bound<'py, PyAny>, num_experts: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let e = positive_int(num_experts, "num_experts")?;
    let et = borrow(experts, "experts", &INDICES)?;
    let shape = et.shape().to_vec();
    let top_k = match shape.as_slice() {
        [_] => 1,
        [_, k] => *k,
        _ => return Err(to_py(rio_core::Error::shape("experts", "(T, k) or (T*k,)", &shape))),
    };
    let ids = expert_indices(&et, "experts", e)?;
    let n = ids.len();
    let routing = Routing { top_k: top_k.max(1), weights: vec![0.0; n], experts: ids };
    let d = py.detach(|| CpuBackend.moe_dispatch(&routing, e)).map_err(to_py)?;
    let as_i32 = |v: Vec<u32>| -> Vec<i32> { v.into_iter().map(|x| x as i32).collect() };
    let kind = ArrayKind::of(experts);
    let items = [
        kind.wrap(py, NativeTensor::from_vec(as_i32(d.counts), &[e]))?,
        kind.wrap(py, NativeTensor::from_vec(as_i32(d.offsets), &[e + 1]))?,
        kind.wrap(py, NativeTensor::from_vec(as_i32(d.order), &[n]))?,
        kind.wrap(py, NativeTensor::from_vec(as_i32(d.position), &shape))?,
    ];
    PyTuple::new(py, items)
}

/// A list or tuple of matrices, one per expert; `what` names their shape for errors.
fn borrow_list(obj: &Bound<'_, PyAny>, arg: &str, what: &str) -> PyResult<Vec<PyTensor>> {
    let items: Vec<Bound<'_, PyAny>> = if let Ok(l) = obj.cast::<PyList>() {
        l.iter().collect()
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        t.iter().collect()
    } else {
        return Err(PyTypeError::new_err(format!(
            "{arg}: expected a list of {what} tensors, one per expert, got {}",
            obj.get_type().name()?
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let name = format!("{arg}[{i}]");
            let t = borrow(item, &name, &FLOATS)?;
            if t.shape().len() != 2 {
                return Err(to_py(rio_core::Error::shape(name, what, t.shape())));
            }
            Ok(t)
        })
        .collect()
}

/// Offsets as u32 from an int tensor or a sequence of ints.
fn offsets_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    let values: Vec<i64> = if obj.hasattr("__array_interface__")? || obj.hasattr("__dlpack__")? {
        let t = borrow(obj, "offsets", &INDICES)?;
        if t.shape().len() != 1 {
            return Err(to_py(rio_core::Error::shape("offsets", "(E + 1,)", t.shape())));
        }
        t.to_i64_vec()
    } else {
        obj.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "offsets: expected an int array or a list of ints, got {}",
                obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?
    };
    values
        .into_iter()
        .map(|v| u32::try_from(v).map_err(|_| PyValueError::new_err(format!("offsets: value {v} is outside 0..2^32"))))
        .collect()
}

/// `out[rows of e] = x[rows of e] · weights[e]ᵀ`; expert e owns rows `offsets[e]..offsets[e+1]`.
#[pyfunction]
#[pyo3(signature = (x, weights, offsets, *, out=None))]
fn grouped_gemm<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    out: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let xt = borrow(x, "x", &FLOATS)?;
    let offsets = offsets_arg(offsets)?;
    let (stacked, list);
    let views: Vec<TensorRef<'_>> = if weights.cast::<PyList>().is_ok() || weights.cast::<PyTuple>().is_ok() {
        list = borrow_list(weights, "weights", "(N, K)")?;
        list.iter().map(|w| w.view()).collect()
    } else {
        stacked = borrow(weights, "weights", &FLOATS)?;
        let v = stacked.view();
        if v.ndim() != 3 {
            return Err(to_py(rio_core::Error::shape("weights", "(E, N, K) or a list of (N, K)", v.shape())));
        }
        (0..v.shape()[0]).map(|e| v.index0(e)).collect()
    };
    let xv = xt.view();
    let n = match views.first() {
        Some(w) if w.ndim() == 2 => w.shape()[0],
        Some(w) => return Err(to_py(rio_core::Error::shape("weights[0]", "(N, K)", w.shape()))),
        None => return Err(PyValueError::new_err("weights: needs at least one expert")),
    };
    if xv.ndim() != 2 {
        return Err(to_py(rio_core::Error::shape("x", "(S, K)", xv.shape())));
    }
    let result = output(py, out, ArrayKind::of(x), &[xv.shape()[0], n], xt.dtype())?;
    let mut ot = borrow_mut(&result, "out", &FLOATS)?;
    let mut ov = ot.view_mut();
    py.detach(|| CpuBackend.grouped_gemm(&xv, &views, &offsets, &mut ov)).map_err(to_py)?;
    Ok(result)
}

/// `out[t] = Σ_j weights[t, j] · expert_out[position[t, j]]`.
#[pyfunction]
#[pyo3(signature = (expert_out, weights, position, *, out=None))]
fn moe_combine<'py>(
    py: Python<'py>,
    expert_out: &Bound<'py, PyAny>,
    weights: &Bound<'py, PyAny>,
    position: &Bound<'py, PyAny>,
    out: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let yt = borrow(expert_out, "expert_out", &FLOATS)?;
    let wt = borrow(weights, "weights", &FLOATS)?;
    let pt = borrow(position, "position", &INDICES)?;
    let (yv, wv) = (yt.view(), wt.view());
    if yv.ndim() != 2 {
        return Err(to_py(rio_core::Error::shape("expert_out", "(S, H)", yv.shape())));
    }
    if wv.ndim() != 2 {
        return Err(to_py(rio_core::Error::shape("weights", "(T, k)", wv.shape())));
    }
    let (s, h) = (yv.shape()[0], yv.shape()[1]);
    let (t, k) = (wv.shape()[0], wv.shape()[1]);
    if pt.shape() != [t * k] && pt.shape() != [t, k] {
        return Err(to_py(rio_core::Error::shape("position", format!("(T*k,) = ({}) or (T, k) = ({t}, {k})", t * k), pt.shape())));
    }
    let position = pt.to_i64_vec();
    if let Some((i, p)) = position.iter().enumerate().find(|(_, &p)| p < 0 || p as u64 >= s as u64) {
        return Err(PyValueError::new_err(format!("position: value {p} at flat index {i} is outside 0..{s} (the rows of expert_out)")));
    }
    let result = output(py, out, ArrayKind::of(expert_out), &[t, h], yt.dtype())?;
    let mut ot = borrow_mut(&result, "out", &FLOATS)?;
    let mut ov = ot.view_mut();
    py.detach(|| -> rio_core::Result<()> {
        rows::expect_output(&ov, "out", &[t, h])?;
        let ys = rows::gather(&yv, None, 1, DType::F32)?;
        let w = rows::gather(&wv, None, 1, DType::F32)?;
        // combine reads only the routing weights and the dispatch positions.
        let routing = Routing { top_k: k, experts: Vec::new(), weights: w.as_slice::<f32>().to_vec() };
        let dispatch =
            Dispatch { counts: Vec::new(), offsets: Vec::new(), order: Vec::new(), position: position.iter().map(|&p| p as u32).collect() };
        let mut acc = vec![0f32; t * h];
        if k > 0 {
            combine::combine(ys.as_slice::<f32>(), &routing, &dispatch, h, &mut acc);
        }
        rows::store(&acc, &mut ov)
    })
    .map_err(to_py)?;
    Ok(result)
}

/// The whole sparse MoE block, in either expert layout, with an optional (gated) shared expert.
#[pyfunction]
#[pyo3(signature = (
    x, router_weight, gate_up_proj=None, down_proj=None, *, top_k, renormalize=true,
    gate_proj=None, up_proj=None, shared_gate_proj=None, shared_up_proj=None, shared_down_proj=None,
    shared_expert_gate=None, out=None
))]
#[allow(clippy::too_many_arguments)]
fn moe_forward<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    router_weight: &Bound<'py, PyAny>,
    gate_up_proj: Option<Bound<'py, PyAny>>,
    down_proj: Option<Bound<'py, PyAny>>,
    top_k: &Bound<'py, PyAny>,
    renormalize: bool,
    gate_proj: Option<Bound<'py, PyAny>>,
    up_proj: Option<Bound<'py, PyAny>>,
    shared_gate_proj: Option<Bound<'py, PyAny>>,
    shared_up_proj: Option<Bound<'py, PyAny>>,
    shared_down_proj: Option<Bound<'py, PyAny>>,
    shared_expert_gate: Option<Bound<'py, PyAny>>,
    out: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let config = router_config(top_k, renormalize)?;
    let xt = borrow(x, "x", &FLOATS)?;
    let rt = borrow(router_weight, "router_weight", &FLOATS)?;
    let down = down_proj.ok_or_else(|| PyTypeError::new_err("down_proj: required ((E, H, I) tensor, or a list of (H, I) per expert)"))?;
    let layout = match (&gate_up_proj, &gate_proj, &up_proj) {
        (Some(gu), None, None) => Layout::Fused { gate_up: borrow(gu, "gate_up_proj", &FLOATS)?, down: borrow(&down, "down_proj", &FLOATS)? },
        (None, Some(g), Some(u)) => Layout::PerExpert {
            gate: borrow_list(g, "gate_proj", "(I, H)")?,
            up: borrow_list(u, "up_proj", "(I, H)")?,
            down: borrow_list(&down, "down_proj", "(H, I)")?,
        },
        _ => {
            return Err(PyValueError::new_err(
                "gate_up_proj: give either gate_up_proj (fused layout) or both gate_proj and up_proj lists (per-expert layout), not both or neither",
            ))
        }
    };
    let shared = match (shared_gate_proj, shared_up_proj, shared_down_proj) {
        (Some(g), Some(u), Some(d)) => Some((
            borrow(&g, "shared_gate_proj", &FLOATS)?,
            borrow(&u, "shared_up_proj", &FLOATS)?,
            borrow(&d, "shared_down_proj", &FLOATS)?,
        )),
        (None, None, None) => {
            if shared_expert_gate.is_some() {
                return Err(PyValueError::new_err(
                    "shared_expert_gate: given without shared_gate_proj, shared_up_proj and shared_down_proj",
                ));
            }
            None
        }
        _ => {
            return Err(PyValueError::new_err(
                "shared_gate_proj: shared_gate_proj, shared_up_proj and shared_down_proj go together; give all three or none",
            ))
        }
    };
    let gate_t = shared_expert_gate.as_ref().map(|g| borrow(g, "shared_expert_gate", &FLOATS).map(PyTensor::unsqueeze0)).transpose()?;

    let shared = shared.as_ref().map(|(g, u, d)| SharedExpert {
        mats: ExpertMats { gate: g.view(), up: u.view(), down: d.view() },
        gate_weight: gate_t.as_ref().map(|g| g.view()),
    });
    let weights = layout.weights(rt.view(), shared).map_err(to_py)?;
    let xv = xt.view();
    xv.expect_shape("x", &[None, Some(weights.hidden())], "(T, H)").map_err(to_py)?;
    let result = output(py, out, ArrayKind::of(x), xv.shape(), xt.dtype())?;
    let mut ot = borrow_mut(&result, "out", &FLOATS)?;
    let mut ov = ot.view_mut();
    py.detach(|| CpuBackend.moe_forward(&xv, &weights, config, &mut ov)).map_err(to_py)?;
    Ok(result)
}

enum Layout {
    Fused { gate_up: PyTensor, down: PyTensor },
    PerExpert { gate: Vec<PyTensor>, up: Vec<PyTensor>, down: Vec<PyTensor> },
}

impl Layout {
    fn weights<'a>(&'a self, router: TensorRef<'a>, shared: Option<SharedExpert<'a>>) -> rio_core::Result<MoeWeights<'a>> {
        match self {
            Layout::Fused { gate_up, down } => {
                if let [e, _, h] = *gate_up.shape() {
                    router.expect_shape("router_weight", &[Some(e), Some(h)], "(E, H)")?;
                }
                MoeWeights::fused(router, gate_up.view(), down.view(), shared)
            }
            Layout::PerExpert { gate, up, down } => {
                let same_count = gate.len() == up.len() && gate.len() == down.len();
                if let (Some(g), true) = (gate.first(), same_count) {
                    router.expect_shape("router_weight", &[Some(gate.len()), Some(g.shape()[1])], "(E, H)")?;
                }
                let views = |v: &'a [PyTensor]| v.iter().map(|t| t.view()).collect();
                MoeWeights::per_expert(router, views(gate), views(up), views(down), shared)
            }
        }
    }
}
