//! The CUDA backend from Python: availability (never raises where there is no GPU), the embedded
//! kernel images, and the MoE operations on CUDA torch tensors shared through DLPack on the
//! caller's stream. `rio_rt.cuda` wraps these with torch-friendly signatures.
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use rio_core::moe::{ExpertMats, MoeWeights, RouterConfig, SharedExpert};
use rio_core::{Backend, DType, TensorMut, TensorRef};
use rio_cuda::CudaBackend;

use crate::dlpack::{import_cuda, ImportedView};
use crate::errors::to_py;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cuda_status, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_kernel_images, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_moe_route, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_moe_dispatch, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_grouped_gemm, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_moe_forward, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_launch, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_dense_gemm, m)?)?;
    Ok(())
}

/// `{"available", "reason", "nvcc", "kernel_modules", "driver_version", "devices", "cublas"}`.
#[pyfunction]
fn cuda_status(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let a = py.detach(rio_cuda::probe);
    let d = PyDict::new(py);
    d.set_item("available", a.available)?;
    d.set_item("reason", &a.reason)?;
    d.set_item("nvcc", a.nvcc)?;
    d.set_item("kernel_modules", &a.kernel_modules)?;
    d.set_item("driver_version", a.driver_version)?;
    let devices = a
        .devices
        .iter()
        .map(|dev| {
            let x = PyDict::new(py);
            x.set_item("ordinal", dev.ordinal)?;
            x.set_item("name", &dev.name)?;
            x.set_item("compute_capability", dev.compute_capability)?;
            x.set_item("total_memory", dev.total_memory)?;
            Ok(x)
        })
        .collect::<PyResult<Vec<_>>>()?;
    d.set_item("devices", devices)?;
    d.set_item("cublas", a.cublas)?;
    Ok(d)
}

/// `{module: {"ptx_80", "ptx_90", "cubin_80", "cubin_90"}}`: what build.rs embedded (bytes; PTX
/// without its trailing NUL).
#[pyfunction]
fn cuda_kernel_images(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for m in rio_cuda::kernels::MODULES {
        let x = PyDict::new(py);
        x.set_item("ptx_80", PyBytes::new(py, m.ptx_80.trim_end_matches('\0').as_bytes()))?;
        x.set_item("ptx_90", PyBytes::new(py, m.ptx_90.trim_end_matches('\0').as_bytes()))?;
        x.set_item("cubin_80", PyBytes::new(py, m.cubin_80))?;
        x.set_item("cubin_90", PyBytes::new(py, m.cubin_90))?;
        d.set_item(m.name, x)?;
    }
    Ok(d)
}

/// A CUDA tensor borrowed through DLPack for the duration of one call.
struct CudaTensor(ImportedView);

impl CudaTensor {
    fn import(obj: &Bound<'_, PyAny>, arg: &str, stream: u64) -> PyResult<Self> {
        let v = import_cuda(obj, arg, stream)?;
        match &v.dtype {
            Ok(DType::BF16 | DType::F16 | DType::F32) => Ok(CudaTensor(v)),
            Ok(other) => Err(PyValueError::new_err(format!("{arg}: expected a float tensor, got {}", other.name()))),
            Err(name) => Err(PyValueError::new_err(format!("{arg}: expected a float tensor, got {name}"))),
        }
    }

    fn view(&self) -> TensorRef<'_> {
        let v = &self.0;
        // SAFETY: the DLPack producer keeps the memory alive while `self.0.owner` lives.
        unsafe { TensorRef::from_raw(v.ptr, *v.dtype.as_ref().unwrap(), v.shape.clone(), v.strides.clone()) }
    }

    fn view_mut(&mut self) -> TensorMut<'_> {
        let v = &self.0;
        // SAFETY: as `view`; the caller passed this tensor as the output, nothing else aliases it here.
        unsafe { TensorMut::from_raw(v.ptr, *v.dtype.as_ref().unwrap(), v.shape.clone(), v.strides.clone()) }
    }
}

fn backend(stream: u64) -> PyResult<CudaBackend> {
    // SAFETY: the Python wrapper passes torch's current stream of device 0 (or 0).
    unsafe { CudaBackend::with_stream(stream) }.map_err(to_py)
}

fn router_config(top_k: usize, renormalize: bool) -> RouterConfig {
    RouterConfig { top_k, renormalize }
}

/// Routing of CUDA `x [T, H]` through `router_weight [E, H]`: `(experts, weights)` as flat lists.
#[pyfunction]
#[pyo3(signature = (x, router_weight, top_k, renormalize, stream))]
fn cuda_moe_route(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    router_weight: &Bound<'_, PyAny>,
    top_k: usize,
    renormalize: bool,
    stream: u64,
) -> PyResult<(Vec<u32>, Vec<f32>)> {
    let b = backend(stream)?;
    let (xt, rt) = (CudaTensor::import(x, "x", stream)?, CudaTensor::import(router_weight, "router_weight", stream)?);
    let (xv, rv) = (xt.view(), rt.view());
    let r = py.detach(|| b.moe_route(&xv, &rv, router_config(top_k, renormalize))).map_err(to_py)?;
    Ok((r.experts, r.weights))
}

/// `(counts, offsets, order, position)` of a dispatch.
type DispatchLists = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>);

/// Dispatch of routed expert ids (flat, `top_k` per token) on the GPU:
/// `(counts, offsets, order, position)`.
#[pyfunction]
fn cuda_moe_dispatch(py: Python<'_>, experts: Vec<u32>, top_k: usize, num_experts: usize) -> PyResult<DispatchLists> {
    if top_k == 0 || !experts.len().is_multiple_of(top_k) {
        return Err(PyValueError::new_err(format!("experts: {} ids are not whole rows of top_k = {top_k}", experts.len())));
    }
    let b = backend(0)?;
    let routing = rio_core::moe::Routing { top_k, weights: vec![0.0; experts.len()], experts };
    let d = py.detach(|| b.moe_dispatch(&routing, num_experts)).map_err(to_py)?;
    Ok((d.counts, d.offsets, d.order, d.position))
}

/// `out[rows of e] = x[rows of e] · weights[e]ᵀ` on CUDA tensors: `x [S, K]`, `weights [E, N, K]`,
/// `out [S, N]` (float32 or the weight dtype).
#[pyfunction]
fn cuda_grouped_gemm(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    weights: &Bound<'_, PyAny>,
    offsets: Vec<u32>,
    out: &Bound<'_, PyAny>,
    stream: u64,
) -> PyResult<()> {
    let b = backend(stream)?;
    let (xt, wt) = (CudaTensor::import(x, "x", stream)?, CudaTensor::import(weights, "weights", stream)?);
    let mut ot = CudaTensor::import(out, "out", stream)?;
    let w = wt.view();
    if w.ndim() != 3 {
        return Err(PyValueError::new_err(format!("weights: expected shape (E, N, K), got {:?}", w.shape())));
    }
    let mats: Vec<TensorRef<'_>> = (0..w.shape()[0]).map(|e| w.index0(e)).collect();
    let xv = xt.view();
    let mut ov = ot.view_mut();
    py.detach(|| b.grouped_gemm(&xv, &mats, &offsets, &mut ov)).map_err(to_py)
}

/// The sparse MoE block on CUDA tensors, fused layout (`gate_up_proj [E, 2I, H]`,
/// `down_proj [E, H, I]`), optional shared expert; writes `out [T, H]`.
#[pyfunction]
#[pyo3(signature = (x, router_weight, gate_up_proj, down_proj, top_k, renormalize, out, stream, shared_gate_proj=None, shared_up_proj=None, shared_down_proj=None, shared_expert_gate=None))]
#[allow(clippy::too_many_arguments)]
fn cuda_moe_forward(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    router_weight: &Bound<'_, PyAny>,
    gate_up_proj: &Bound<'_, PyAny>,
    down_proj: &Bound<'_, PyAny>,
    top_k: usize,
    renormalize: bool,
    out: &Bound<'_, PyAny>,
    stream: u64,
    shared_gate_proj: Option<Bound<'_, PyAny>>,
    shared_up_proj: Option<Bound<'_, PyAny>>,
    shared_down_proj: Option<Bound<'_, PyAny>>,
    shared_expert_gate: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let b = backend(stream)?;
    let imp = |o: &Bound<'_, PyAny>, arg: &str| CudaTensor::import(o, arg, stream);
    let (xt, rt, gu, dn) =
        (imp(x, "x")?, imp(router_weight, "router_weight")?, imp(gate_up_proj, "gate_up_proj")?, imp(down_proj, "down_proj")?);
    let shared = match (&shared_gate_proj, &shared_up_proj, &shared_down_proj) {
        (Some(g), Some(u), Some(d)) => Some((imp(g, "shared_gate_proj")?, imp(u, "shared_up_proj")?, imp(d, "shared_down_proj")?)),
        (None, None, None) => None,
        _ => return Err(PyValueError::new_err("shared_gate_proj: shared_gate_proj, shared_up_proj and shared_down_proj go together")),
    };
    let gate = shared_expert_gate.as_ref().map(|g| imp(g, "shared_expert_gate")).transpose()?;
    let mut ot = imp(out, "out")?;
    let gate_view = gate.as_ref().map(|g| {
        let v = g.view();
        // `[H]` or `[1, H]`: the backend wants `[1, H]`.
        if v.ndim() == 1 {
            // SAFETY: the same memory, viewed as one row.
            unsafe { TensorRef::from_raw(v.as_ptr(), v.dtype(), vec![1, v.shape()[0]], vec![v.shape()[0] as isize, 1]) }
        } else {
            v
        }
    });
    let shared = shared
        .as_ref()
        .map(|(g, u, d)| SharedExpert { mats: ExpertMats { gate: g.view(), up: u.view(), down: d.view() }, gate_weight: gate_view });
    let weights = MoeWeights::fused(rt.view(), gu.view(), dn.view(), shared).map_err(to_py)?;
    let xv = xt.view();
    let mut ov = ot.view_mut();
    py.detach(|| b.moe_forward(&xv, &weights, router_config(top_k, renormalize), &mut ov)).map_err(to_py)
}

/// Launches embedded kernel `name`: `args` are `(kind, value)` pairs with kind "ptr" (a device
/// address), "i32", "i64" or "f32", in the kernel's parameter order. For tests and the decode
/// kernels that the model's GPU forward does not call yet; the Python wrapper builds `args`.
#[pyfunction]
#[pyo3(signature = (name, grid, block, shared_bytes, stream, args))]
fn cuda_launch(
    py: Python<'_>,
    name: &str,
    grid: (u32, u32, u32),
    block: u32,
    shared_bytes: u32,
    stream: u64,
    args: Vec<(String, Bound<'_, PyAny>)>,
) -> PyResult<()> {
    use rio_cuda::KernelArg;
    let args = args
        .iter()
        .enumerate()
        .map(|(i, (kind, value))| {
            Ok(match kind.as_str() {
                "ptr" => KernelArg::Ptr(value.extract()?),
                "i32" => KernelArg::I32(value.extract()?),
                "i64" => KernelArg::I64(value.extract()?),
                "f32" => KernelArg::F32(value.extract()?),
                other => return Err(PyValueError::new_err(format!("args[{i}]: kind must be ptr, i32, i64 or f32, got {other:?}"))),
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    if block == 0 || block > 1024 {
        return Err(PyValueError::new_err(format!("block: must be in 1..=1024 threads, got {block}")));
    }
    // SAFETY: the caller (rio_rt.cuda.launch) passes device tensors matching the kernel signature.
    py.detach(|| unsafe { rio_cuda::launch(name, grid, block, shared_bytes, stream, &args) }).map_err(to_py)
}

/// `out [M, N] = x [M, K] · weight [N, K]ᵀ` through cuBLAS on CUDA tensors with contiguous rows;
/// `out` is float32 or the input dtype.
#[pyfunction]
fn cuda_dense_gemm(py: Python<'_>, x: &Bound<'_, PyAny>, weight: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>, stream: u64) -> PyResult<()> {
    let (xt, wt, ot) =
        (CudaTensor::import(x, "x", stream)?, CudaTensor::import(weight, "weight", stream)?, CudaTensor::import(out, "out", stream)?);
    let (xv, wv, ov) = (xt.view(), wt.view(), ot.view());
    let rows = |t: &TensorRef<'_>, arg: &str| -> PyResult<(usize, usize, usize)> {
        match (t.shape(), t.strides()) {
            ([r, c], [ld, 1]) if *ld >= *c as isize => Ok((*r, *c, *ld as usize)),
            ([r, c], [_, _]) if *r <= 1 => Ok((*r, *c, *c)),
            _ => Err(PyValueError::new_err(format!("{arg}: expected a 2-D CUDA tensor with contiguous rows, got shape {:?}", t.shape()))),
        }
    };
    let ((m, k, lda), (n, kw, ldw), (mo, no, ldc)) = (rows(&xv, "x")?, rows(&wv, "weight")?, rows(&ov, "out")?);
    if kw != k || mo != m || no != n {
        return Err(PyValueError::new_err(format!(
            "shapes: x {:?} · weight {:?}ᵀ does not give out {:?}",
            xv.shape(),
            wv.shape(),
            ov.shape()
        )));
    }
    if wv.dtype() != xv.dtype() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!("weight: expected {}, got {}", xv.dtype().name(), wv.dtype().name())));
    }
    let (a, w, c) = (xv.as_ptr() as u64, wv.as_ptr() as u64, ov.as_ptr() as u64);
    let (dtype, out_dtype) = (xv.dtype(), ov.dtype());
    // SAFETY: DLPack gave device tensors of these shapes, alive for the call; the stream is torch's.
    py.detach(|| unsafe { rio_cuda::dense::gemm_nt(a, lda, w, ldw, c, ldc, (m, n, k), dtype, out_dtype, stream) }).map_err(to_py)
}
