//! Benchmark primitives, timed in Rust with the GIL released: the machine's read bandwidth and
//! GEMM peak, and `MoeLayerBench`, one MoE layer over weights the caller owns (numpy arrays shared
//! with torch), so rio and torch time the very same bytes.
//!
//! Arrays are borrowed in place, never copied (`arrays::borrow_in_place`); bfloat16, which numpy
//! lacks, travels as uint16 arrays holding the bf16 bits.
use std::time::Instant;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rio_core::moe::{ExpertMats, MoeWeights, RouterConfig, SharedExpert};
use rio_core::{DType, TensorRef};

use crate::arrays::{borrow_in_place, borrow_mut, KeepAlive};
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

/// Borrows weight `obj` in place into `kept`; C-contiguous, as the kernels index weights as dense
/// matrices.
///
/// # Safety
/// As [`KeepAlive::keep`]: the view must not be used once `kept` has dropped.
unsafe fn weight(kept: &mut KeepAlive, obj: &Bound<'_, PyAny>, arg: &str, dtype: DType) -> PyResult<TensorRef<'static>> {
    let t = borrow_in_place(obj, arg, &[dtype])?;
    if !t.view().is_contiguous() {
        return Err(PyValueError::new_err(format!("{arg}: must be C-contiguous (np.ascontiguousarray)")));
    }
    // SAFETY: passed on to the caller.
    Ok(unsafe { kept.keep(t) })
}

/// The MoE layer of one benchmark: weights held by the caller's numpy arrays (kept alive here),
/// the router's top-k. Times `rio_cpu::moe::forward` without Python in the loop.
#[pyclass(module = "rio_rt._rio_rt")]
struct MoeLayerBench {
    /// Views into `_kept`; 'static because what they point into lives as long as `self`.
    /// Declared before `_kept`, so it drops first.
    weights: MoeWeights<'static>,
    config: RouterConfig,
    dtype: DType,
    /// The borrowed weights, held so the memory under `weights` stays valid.
    _kept: KeepAlive,
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
        let mut kept = KeepAlive::default();
        // SAFETY (every `weight` below): its view goes into `weights`, which drops before `kept`
        // in `self`, or, on error, is dropped with `kept` before any use.
        let (router, gate_up, down) = unsafe {
            (
                weight(&mut kept, router_weight, "router_weight", dtype)?,
                weight(&mut kept, gate_up_proj, "gate_up_proj", dtype)?,
                weight(&mut kept, down_proj, "down_proj", dtype)?,
            )
        };
        let shared =
            match (shared_gate_proj, shared_up_proj, shared_down_proj) {
                (None, None, None) if shared_expert_gate.is_none() => None,
                (Some(g), Some(u), Some(d)) => {
                    let mats = unsafe {
                        ExpertMats {
                            gate: weight(&mut kept, g, "shared_gate_proj", dtype)?,
                            up: weight(&mut kept, u, "shared_up_proj", dtype)?,
                            down: weight(&mut kept, d, "shared_down_proj", dtype)?,
                        }
                    };
                    let gate_weight = match shared_expert_gate {
                        Some(sg) => Some(unsafe { weight(&mut kept, sg, "shared_expert_gate", dtype)? }),
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
        Ok(MoeLayerBench { weights, config: RouterConfig { top_k, renormalize: true }, dtype, _kept: kept })
    }

    /// `out [T, H] float32 = MoE(x [T, H])`, x in the weights' dtype.
    fn forward(&self, py: Python<'_>, x: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>) -> PyResult<()> {
        let (xt, mut ot) = (borrow_in_place(x, "x", &[self.dtype])?, borrow_mut(out, "out", &[DType::F32])?);
        let (xv, mut ov) = (xt.view(), ot.view_mut());
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
        let (xst, mut ot) = (borrow_in_place(xs, "xs", &[self.dtype])?, borrow_mut(out, "out", &[DType::F32])?);
        let (xs, mut ov) = (xst.view(), ot.view_mut());
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
