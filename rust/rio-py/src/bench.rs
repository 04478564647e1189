//! Benchmark primitives, timed in Rust with the GIL released: the machine's read bandwidth and
//! GEMM peak, and `MoeLayerBench`, one MoE layer over weights the caller owns (numpy arrays shared
//! with torch), so rio and torch time the very same bytes.
//!
//! Arrays arrive through numpy's `__array_interface__` (the buffer protocol is outside the
//! limited API of Python 3.10). bfloat16, which numpy lacks, travels as 2-byte integers holding
//! the bf16 bits.
use std::time::Instant;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rio_core::moe::{ExpertMats, MoeWeights, RouterConfig, SharedExpert};
use rio_core::{DType, TensorMut, TensorRef};

use crate::errors::to_py;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(measure_read_bandwidth, m)?)?;
    m.add_function(wrap_pyfunction!(measure_gemm_peak, m)?)?;
    m.add_class::<MoeLayerBench>()?;
    m.add_class::<CacheFlusher>()?;
    Ok(())
}

fn positive(arg: &str, v: i64) -> PyResult<usize> {
    if v <= 0 {
        return Err(PyValueError::new_err(format!("{arg}: must be positive, got {v}")));
    }
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("{arg}: {v} is too large")))
}

/// Streaming read bandwidth in GB/s over a `bytes`-sized buffer, best pass in about `seconds`.
#[pyfunction]
fn measure_read_bandwidth(py: Python<'_>, bytes: i64, seconds: f64) -> PyResult<f64> {
    let bytes = positive("bytes", bytes)? as u64;
    py.detach(|| rio_cpu::peak::read_bandwidth(bytes, seconds)).map_err(to_py)
}

/// bf16 GEMM rate of rio's own kernel in GFLOP/s on `[m, k] · [n, k]ᵀ`, best in about `seconds`.
#[pyfunction]
fn measure_gemm_peak(py: Python<'_>, m: i64, n: i64, k: i64, seconds: f64) -> PyResult<f64> {
    let (m, n, k) = (positive("m", m)?, positive("n", n)?, positive("k", k)?);
    py.detach(|| rio_cpu::peak::gemm_peak(m, n, k, seconds)).map_err(to_py)
}

/// A resident buffer bigger than the caches; `flush()` reads it through, evicting what they held.
#[pyclass(module = "rio_rt._rio_rt")]
struct CacheFlusher {
    buffer: rio_cpu::peak::StreamBuffer,
}

#[pymethods]
impl CacheFlusher {
    #[new]
    fn new(py: Python<'_>, bytes: i64) -> PyResult<Self> {
        let bytes = positive("bytes", bytes)? as u64;
        let buffer = py.detach(|| rio_cpu::peak::StreamBuffer::new(bytes)).map_err(to_py)?;
        Ok(CacheFlusher { buffer })
    }

    fn flush(&self, py: Python<'_>) {
        py.detach(|| std::hint::black_box(self.buffer.read_all()));
    }

    #[getter]
    fn bytes(&self) -> u64 {
        self.buffer.bytes()
    }
}

/// Where an array's elements live, read from its `__array_interface__`.
struct ArrayInfo {
    ptr: usize,
    shape: Vec<usize>,
    /// In elements.
    strides: Vec<isize>,
    readonly: bool,
}

fn array_info(obj: &Bound<'_, PyAny>, arg: &str, dtype: DType) -> PyResult<ArrayInfo> {
    let Ok(iface) = obj.getattr("__array_interface__") else {
        return Err(PyTypeError::new_err(format!("{arg}: expected a numpy array, got {}", obj.get_type().name()?)));
    };
    let iface = iface.cast::<PyDict>().map_err(|_| PyTypeError::new_err(format!("{arg}: __array_interface__ is not a dict")))?;
    let bad = |key: &str, want: &str| PyTypeError::new_err(format!("{arg}: __array_interface__[{key:?}] must be {want}"));
    let get = |key: &str| -> PyResult<Bound<'_, PyAny>> { iface.get_item(key)?.ok_or_else(|| bad(key, "present")) };
    let typestr: String = get("typestr")?.extract().map_err(|_| bad("typestr", "a str"))?;
    let (kind, size) = (typestr.as_bytes().get(1).copied().unwrap_or(b'?'), typestr.get(2..).unwrap_or(""));
    let ok = match dtype {
        DType::F32 => kind == b'f' && size == "4",
        DType::F16 => kind == b'f' && size == "2",
        // bf16 bits in any 2-byte non-float container (uint16, int16, ml_dtypes' void).
        DType::BF16 => matches!(kind, b'u' | b'i' | b'V') && size == "2",
        _ => false,
    };
    if !ok {
        let want = if dtype == DType::BF16 { "bfloat16 bits as uint16".to_string() } else { dtype.name().to_string() };
        return Err(PyTypeError::new_err(format!("{arg}: expected dtype {want}, got array typestr {typestr:?}")));
    }
    let (ptr, readonly): (usize, bool) = get("data")?.extract().map_err(|_| bad("data", "a (pointer, readonly) pair"))?;
    let shape: Vec<usize> = get("shape")?.extract().map_err(|_| bad("shape", "a tuple of sizes"))?;
    let esize = dtype.size() as isize;
    let strides: Vec<isize> = match iface.get_item("strides")? {
        Some(s) if !s.is_none() => {
            let bytes: Vec<isize> = s.extract().map_err(|_| bad("strides", "None or a tuple of byte strides"))?;
            if bytes.len() != shape.len() {
                return Err(PyValueError::new_err(format!("{arg}: {} strides for {} dimensions", bytes.len(), shape.len())));
            }
            if bytes.iter().any(|b| b % esize != 0) {
                return Err(PyValueError::new_err(format!("{arg}: strides {bytes:?} are not whole elements")));
            }
            bytes.into_iter().map(|b| b / esize).collect()
        }
        _ => {
            let mut acc = 1isize;
            let mut st = vec![0isize; shape.len()];
            for (s, &d) in st.iter_mut().zip(&shape).rev() {
                *s = acc;
                acc *= d.max(1) as isize;
            }
            st
        }
    };
    if ptr == 0 && shape.iter().product::<usize>() > 0 {
        return Err(PyValueError::new_err(format!("{arg}: array has no data pointer")));
    }
    if ptr % dtype.size() != 0 {
        return Err(PyValueError::new_err(format!("{arg}: data is not aligned to its {}-byte elements", dtype.size())));
    }
    Ok(ArrayInfo { ptr, shape, strides, readonly })
}

/// A read-only view of a numpy array.
///
/// # Safety
/// `obj` must stay alive, and keep its memory, for as long as the view is used.
unsafe fn view<'a>(obj: &Bound<'_, PyAny>, arg: &str, dtype: DType) -> PyResult<TensorRef<'a>> {
    let a = array_info(obj, arg, dtype)?;
    // SAFETY: numpy vouches for pointer, shape and strides; the caller for the lifetime.
    Ok(unsafe { TensorRef::from_raw(a.ptr as *const u8, dtype, a.shape, a.strides) })
}

/// A C-contiguous read-only view (weights: the kernels index them as dense matrices).
///
/// # Safety
/// As [`view`].
unsafe fn weight_view<'a>(obj: &Bound<'_, PyAny>, arg: &str, dtype: DType) -> PyResult<TensorRef<'a>> {
    // SAFETY: passed on to the caller.
    let v = unsafe { view(obj, arg, dtype)? };
    if !v.is_contiguous() {
        return Err(PyValueError::new_err(format!("{arg}: must be C-contiguous (np.ascontiguousarray)")));
    }
    Ok(v)
}

/// The MoE layer of one benchmark: weights held by the caller's numpy arrays (kept alive here),
/// the router's top-k. Times `rio_cpu::moe::forward` without Python in the loop.
#[pyclass(module = "rio_rt._rio_rt")]
struct MoeLayerBench {
    /// Views into `_arrays`; 'static because the arrays they point into live as long as `self`.
    weights: MoeWeights<'static>,
    config: RouterConfig,
    dtype: DType,
    /// The weight arrays, owned so the memory under `weights` stays valid.
    _arrays: Vec<Py<PyAny>>,
}

#[pymethods]
impl MoeLayerBench {
    /// `router_weight [E, H]`, `gate_up_proj [E, 2I, H]` (gate rows first), `down_proj [E, H, I]`,
    /// optional shared expert `[I_s, H]`, `[I_s, H]`, `[H, I_s]` and gate `[1, H]`; all in `dtype`
    /// ("bf16" as uint16 bits, "f16", "f32").
    #[new]
    #[pyo3(signature = (router_weight, gate_up_proj, down_proj, top_k, dtype, shared_gate_proj=None, shared_up_proj=None, shared_down_proj=None, shared_expert_gate=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        router_weight: &Bound<'_, PyAny>,
        gate_up_proj: &Bound<'_, PyAny>,
        down_proj: &Bound<'_, PyAny>,
        top_k: i64,
        dtype: &str,
        shared_gate_proj: Option<&Bound<'_, PyAny>>,
        shared_up_proj: Option<&Bound<'_, PyAny>>,
        shared_down_proj: Option<&Bound<'_, PyAny>>,
        shared_expert_gate: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let dtype = match DType::parse(dtype) {
            Some(d) if d.is_float() => d,
            _ => return Err(PyValueError::new_err(format!("dtype: expected bf16, f16 or f32, got {dtype:?}"))),
        };
        let top_k = positive("top_k", top_k)?;
        let mut arrays = vec![router_weight.clone().unbind(), gate_up_proj.clone().unbind(), down_proj.clone().unbind()];
        // SAFETY (every `weight_view` below): its array is kept in `arrays`, which `self` owns.
        let (router, gate_up, down) = unsafe {
            (
                weight_view(router_weight, "router_weight", dtype)?,
                weight_view(gate_up_proj, "gate_up_proj", dtype)?,
                weight_view(down_proj, "down_proj", dtype)?,
            )
        };
        let shared =
            match (shared_gate_proj, shared_up_proj, shared_down_proj) {
                (None, None, None) if shared_expert_gate.is_none() => None,
                (Some(g), Some(u), Some(d)) => {
                    let mats = unsafe {
                        ExpertMats {
                            gate: weight_view(g, "shared_gate_proj", dtype)?,
                            up: weight_view(u, "shared_up_proj", dtype)?,
                            down: weight_view(d, "shared_down_proj", dtype)?,
                        }
                    };
                    arrays.extend([g, u, d].map(|a| a.clone().unbind()));
                    let gate_weight = match shared_expert_gate {
                        Some(sg) => {
                            arrays.push(sg.clone().unbind());
                            Some(unsafe { weight_view(sg, "shared_expert_gate", dtype)? })
                        }
                        None => None,
                    };
                    Some(SharedExpert { mats, gate_weight })
                }
                _ => return Err(PyValueError::new_err(
                    "shared_gate_proj, shared_up_proj, shared_down_proj: give all three or none (and shared_expert_gate only with them)",
                )),
            };
        let weights = MoeWeights::fused(router, gate_up, down, shared).map_err(to_py)?;
        rio_cpu::moe::check_top_k(top_k, weights.num_experts()).map_err(to_py)?;
        Ok(MoeLayerBench { weights, config: RouterConfig { top_k, renormalize: true }, dtype, _arrays: arrays })
    }

    /// `out [T, H] float32 = MoE(x [T, H])`, x in the weights' dtype.
    fn forward(&self, py: Python<'_>, x: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: `x` and `out` are borrowed from the caller for the whole call.
        let (xv, mut ov) = unsafe { (view(x, "x", self.dtype)?, output(out)?) };
        py.detach(|| rio_cpu::moe::forward(&xv, &self.weights, self.config, &mut ov)).map_err(to_py)
    }

    /// Runs `forward(xs[r], out)` for r = 0, 1, ... until `seconds` have passed and at least
    /// `min_runs` calls ran (or `xs [R, T, H]` ran out); returns the seconds each call took.
    /// With a `flusher`, the caches are flushed (untimed) before every call.
    #[pyo3(signature = (xs, out, seconds, min_runs, flusher=None))]
    fn time_forward(
        &self,
        py: Python<'_>,
        xs: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        seconds: f64,
        min_runs: usize,
        flusher: Option<PyRef<'_, CacheFlusher>>,
    ) -> PyResult<Vec<f64>> {
        let flusher = flusher.as_deref().map(|f| &f.buffer);
        // SAFETY: as in `forward`.
        let (xs, mut ov) = unsafe { (view(xs, "xs", self.dtype)?, output(out)?) };
        if xs.ndim() != 3 {
            return Err(PyValueError::new_err(format!("xs: expected shape (R, T, H), got {:?}", xs.shape())));
        }
        py.detach(|| {
            let mut times = Vec::new();
            for r in 0..xs.shape()[0] {
                let x = xs.index0(r);
                if let Some(f) = flusher {
                    std::hint::black_box(f.read_all());
                }
                let start = Instant::now();
                rio_cpu::moe::forward(&x, &self.weights, self.config, &mut ov)?;
                times.push(start.elapsed().as_secs_f64());
                if times.len() >= min_runs && times.iter().sum::<f64>() >= seconds {
                    break;
                }
            }
            Ok(times)
        })
        .map_err(to_py)
    }
}

/// A writable float32 view of `out`.
///
/// # Safety
/// As [`view`]; and nothing else may read or write `out` while the view is used.
unsafe fn output<'a>(out: &Bound<'_, PyAny>) -> PyResult<TensorMut<'a>> {
    let a = array_info(out, "out", DType::F32)?;
    if a.readonly {
        return Err(PyValueError::new_err("out: array is read-only"));
    }
    // SAFETY: numpy vouches for pointer, shape and strides; the caller for lifetime and aliasing.
    Ok(unsafe { TensorMut::from_raw(a.ptr as *mut u8, DType::F32, a.shape, a.strides) })
}
