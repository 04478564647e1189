//! [`CudaBackend`]: the `Backend` trait on our kernels (spec section 5). Every step of the MoE block
//! runs on the device; `moe_forward` launches route, dispatch, expert GEMMs, shared expert and
//! combine back to back on one stream with no host round trip in between.
use cudarc::driver::sys;
use rio_core::moe::{check_grouped_gemm_args, check_route_args, check_top_k, Dispatch, MoeWeights, RouterConfig, Routing};
use rio_core::{Backend, DType, Error, Result, TensorMut, TensorRef};

use crate::device::{gpu, params, Gpu};
use crate::memory::{copy_to_host, device_mat, is_device_pointer, DeviceBuf, Mat};

/// Rows of one tensor-core GEMM tile (kernels/moe_gemm.cu `BM`); dispatch pads groups to it.
const TILE_ROWS: usize = 128;
/// 3 stages x (A + B) x 128 x 32 x 2 bytes (kernels/moe_gemm.cu).
const TC_SMEM: u32 = 3 * 2 * 128 * 32 * 2;
/// Up to this many tokens, `moe_forward` takes the decode path (weights streamed once per expert).
pub const DECODE_MAX_TOKENS: usize = 64;
/// The router kernel keeps one row of E fp32 probabilities in shared memory.
const MAX_EXPERTS: usize = 12000;

/// The CUDA backend on device 0, issuing work on one stream.
#[derive(Debug)]
pub struct CudaBackend {
    stream: sys::CUstream,
}

// SAFETY: a CUstream handle may be used from any thread.
unsafe impl Send for CudaBackend {}
unsafe impl Sync for CudaBackend {}

/// `GemmArgs` of kernels/moe_gemm.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct GemmArgs {
    a: u64,
    lda: i64,
    a_rows: u64,
    a_div: i32,
    _pad0: i32,
    w0: u64,
    w1: u64,
    ldw: i64,
    n: i32,
    k: i32,
    offsets: u64,
    tile_offsets: u64,
    num_experts: i32,
    _pad1: i32,
    c: u64,
    ldc: i64,
}

/// What the grouped GEMM writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Epilogue {
    /// `C = A · Wᵀ` in fp32.
    F32,
    /// `C = A · Wᵀ` in the weight dtype.
    Same,
    /// `C = silu(A · W0ᵀ) ⊙ (A · W1ᵀ)` in the weight dtype.
    Swiglu,
}

/// Row groups on the device: group e owns rows `offsets[e]..offsets[e+1]`, and row tiles
/// `tile_offsets[e]..tile_offsets[e+1]` of [`TILE_ROWS`].
struct Groups<'a> {
    offsets: u64,
    tile_offsets: u64,
    count: usize,
    /// An upper bound of the row tiles (the grid of the tensor-core path).
    max_tiles: usize,
    _keep: Vec<&'a DeviceBuf>,
}

/// The expert weights of one projection: a device table of per-group matrix pointers.
struct Weights {
    table: DeviceBuf,
    ld: usize,
    dtype: DType,
    aligned16: bool,
    _mats: Vec<Mat>,
}

fn dtype_suffix(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

impl CudaBackend {
    /// The backend on torch's (or the legacy) default stream of device 0.
    pub fn new() -> Result<Self> {
        gpu()?.bind()?;
        Ok(CudaBackend { stream: std::ptr::null_mut() })
    }

    /// The backend issuing its work on `stream` (e.g. `torch.cuda.current_stream().cuda_stream`).
    ///
    /// # Safety
    /// `stream` must be 0 or a live CUDA stream of device 0's primary context, for as long as the
    /// backend is used.
    pub unsafe fn with_stream(stream: u64) -> Result<Self> {
        gpu()?.bind()?;
        Ok(CudaBackend { stream: stream as sys::CUstream })
    }

    /// Waits for the work issued so far.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: the stream is live (the constructor's contract).
        unsafe { cudarc::driver::result::stream::synchronize(self.stream) }
            .map_err(|e| crate::device::driver_error("cuStreamSynchronize", e))
    }

    fn gpu(&self) -> Result<&'static Gpu> {
        let g = gpu()?;
        g.bind()?;
        Ok(g)
    }

    fn weights(&self, mats: Vec<Mat>) -> Result<Weights> {
        let first = mats.first().ok_or_else(|| Error::value("weights", "needs at least one expert"))?;
        let (ld, dtype) = (first.ld, first.dtype);
        if mats.iter().any(|m| m.ld != ld && m.rows > 1) {
            return Err(Error::value("weights", "every expert matrix needs the same row stride"));
        }
        let table: Vec<u64> = mats.iter().map(|m| m.ptr).collect();
        let aligned16 = mats.iter().all(|m| m.aligned16());
        Ok(Weights { table: DeviceBuf::from_slice(&table, self.stream)?, ld, dtype, aligned16, _mats: mats })
    }

    fn groups<'a>(&self, offsets: &'a DeviceBuf, tile_offsets: &'a DeviceBuf, count: usize, rows: usize) -> Groups<'a> {
        Groups {
            offsets: offsets.ptr(),
            tile_offsets: tile_offsets.ptr(),
            count,
            max_tiles: rows.div_ceil(TILE_ROWS) + count.min(rows),
            _keep: vec![offsets, tile_offsets],
        }
    }

    /// Host-side group offsets uploaded with their tile offsets.
    fn upload_groups(&self, offsets: &[u32]) -> Result<(DeviceBuf, DeviceBuf)> {
        let mut tiles = Vec::with_capacity(offsets.len());
        let mut acc = 0u32;
        tiles.push(0);
        for w in offsets.windows(2) {
            acc += (w[1] - w[0]).div_ceil(TILE_ROWS as u32);
            tiles.push(acc);
        }
        Ok((DeviceBuf::from_slice(offsets, self.stream)?, DeviceBuf::from_slice(&tiles, self.stream)?))
    }

    /// One grouped GEMM launch. `a_rows`: (dispatch order, k) to read A rows in place by token.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        a: &Mat,
        a_rows: Option<(u64, usize)>,
        w0: &Weights,
        w1: Option<&Weights>,
        n: usize,
        groups: &Groups<'_>,
        c: u64,
        ldc: usize,
        epilogue: Epilogue,
        tensor_cores: bool,
    ) -> Result<()> {
        let g = self.gpu()?;
        let k = a.cols;
        let dtype = w0.dtype;
        if a.dtype != dtype {
            return Err(Error::dtype("x", dtype.name(), a.dtype));
        }
        let args = GemmArgs {
            a: a.ptr,
            lda: a.ld as i64,
            a_rows: a_rows.map_or(0, |r| r.0),
            a_div: a_rows.map_or(1, |r| r.1 as i32),
            _pad0: 0,
            w0: w0.table.ptr(),
            w1: w1.map_or(w0.table.ptr(), |w| w.table.ptr()),
            ldw: w0.ld as i64,
            n: n as i32,
            k: k as i32,
            offsets: groups.offsets,
            tile_offsets: groups.tile_offsets,
            num_experts: groups.count as i32,
            _pad1: 0,
            c,
            ldc: ldc as i64,
        };
        let out = match epilogue {
            Epilogue::F32 => "f32",
            Epilogue::Same => dtype_suffix(dtype),
            Epilogue::Swiglu => "swiglu",
        };
        let aligned = a.aligned16() && w0.aligned16 && w1.is_none_or(|w| w.aligned16);
        if tensor_cores && dtype != DType::F32 && aligned && k.is_multiple_of(8) {
            let name = format!("moe_gemm_tc_{}_{out}", dtype_suffix(dtype));
            let cols = if epilogue == Epilogue::Swiglu { 64 } else { 128 };
            let grid = (n.div_ceil(cols) as u32, groups.max_tiles as u32, 1);
            g.launch(&name, grid, 256, TC_SMEM, self.stream, &mut params![args])
        } else {
            let name = format!("moe_gemm_rows_{}_{out}", dtype_suffix(dtype));
            let cols_per_block = if epilogue == Epilogue::Swiglu { 8 } else { 16 };
            let vectorised = i32::from(aligned);
            let grid = (n.div_ceil(cols_per_block) as u32, groups.count as u32, 1);
            g.launch(&name, grid, 256, 0, self.stream, &mut params![args, vectorised])
        }
    }

    /// Logits `[T, E]` fp32 of the router, then softmax / top-k on the device. Returns device
    /// buffers (experts u32 `[T, k]`, weights f32 `[T, k]`, bad-logit flag).
    fn route_on_device(
        &self,
        x: &Mat,
        x_dtype: DType,
        router: &TensorRef<'_>,
        config: RouterConfig,
    ) -> Result<(DeviceBuf, DeviceBuf, DeviceBuf)> {
        let g = self.gpu()?;
        let (e, t) = (router.shape()[0], x.rows);
        if e > MAX_EXPERTS {
            return Err(Error::Unsupported(format!("CUDA router: {e} experts (at most {MAX_EXPERTS})")));
        }
        let rw = self.weights(vec![device_mat(router, "router_weight", router.dtype(), self.stream)?])?;
        let logits = DeviceBuf::alloc(t * e * 4, self.stream)?;
        let (offsets, tiles) = self.upload_groups(&[0, t as u32])?;
        let groups = self.groups(&offsets, &tiles, 1, t);
        self.gemm(x, None, &rw, None, e, &groups, logits.ptr(), e, Epilogue::F32, t > DECODE_MAX_TOKENS)?;
        let k = config.top_k;
        let experts = DeviceBuf::alloc(t * k * 4, self.stream)?;
        let weights = DeviceBuf::alloc(t * k * 4, self.stream)?;
        let bad = DeviceBuf::from_slice(&[i32::MAX], self.stream)?;
        let (num_experts, top_k, renorm) = (e as i32, k as i32, i32::from(config.renormalize));
        let round_mode: i32 = match x_dtype {
            DType::BF16 => 1,
            DType::F16 => 2,
            _ => 0,
        };
        let (lp, ep, wp, bp) = (logits.ptr(), experts.ptr(), weights.ptr(), bad.ptr());
        g.launch(
            "moe_topk_softmax",
            (t as u32, 1, 1),
            256,
            (e * 4) as u32,
            self.stream,
            &mut params![lp, num_experts, top_k, renorm, round_mode, ep, wp, bp],
        )?;
        Ok((experts, weights, bad))
    }

    /// Counting sort of the routed slots by expert, on the device: (counts, offsets, tile
    /// offsets, order, position, bad-expert flag).
    fn dispatch_on_device(&self, experts: &DeviceBuf, slots: usize, num_experts: usize) -> Result<[DeviceBuf; 6]> {
        let g = self.gpu()?;
        let counts = DeviceBuf::zeroed(num_experts * 4, self.stream)?;
        let offsets = DeviceBuf::alloc((num_experts + 1) * 4, self.stream)?;
        let tiles = DeviceBuf::alloc((num_experts + 1) * 4, self.stream)?;
        let order = DeviceBuf::alloc(slots * 4, self.stream)?;
        let position = DeviceBuf::alloc(slots * 4, self.stream)?;
        let bad = DeviceBuf::from_slice(&[i32::MAX], self.stream)?;
        let (ep, cp, op, tp, orp, pp, bp) =
            (experts.ptr(), counts.ptr(), offsets.ptr(), tiles.ptr(), order.ptr(), position.ptr(), bad.ptr());
        let (s, ne, tile_rows) = (slots as i32, num_experts as i32, TILE_ROWS as i32);
        let blocks = slots.div_ceil(256).clamp(1, 1024) as u32;
        g.launch("moe_count", (blocks, 1, 1), 256, 0, self.stream, &mut params![ep, s, ne, cp, bp])?;
        g.launch("moe_offsets", (1, 1, 1), 32, 0, self.stream, &mut params![cp, ne, tile_rows, op, tp])?;
        g.launch("moe_scatter", (num_experts as u32, 1, 1), 256, 0, self.stream, &mut params![ep, s, op, orp, pp])?;
        Ok([counts, offsets, tiles, order, position, bad])
    }

    /// The weight dtype every device input of `moe_forward` / `grouped_gemm` must have.
    fn expect_device_dtype(t: &TensorRef<'_>, arg: &str, dtype: DType) -> Result<()> {
        if is_device_pointer(t.as_ptr()) && t.dtype() != dtype {
            return Err(Error::dtype(arg, format!("{} (the weight dtype; CUDA tensors are not converted)", dtype.name()), t.dtype()));
        }
        Ok(())
    }
}

fn check_bad_logit(bad: i32, num_experts: usize) -> Result<()> {
    if bad == i32::MAX {
        return Ok(());
    }
    let (t, e) = (bad as usize / num_experts, bad as usize % num_experts);
    Err(Error::value("x", format!("router logit for token {t}, expert {e} is not finite (NaN or Inf in x or router_weight)")))
}

/// Writes device rows `src [rows, cols]` (dtype `dtype`, contiguous) into `out`, which is device
/// memory of the same dtype (copied in place) or host memory (converted on the host).
fn store_out(src: &DeviceBuf, dtype: DType, out: &mut TensorMut<'_>, stream: sys::CUstream) -> Result<()> {
    let shape = out.shape().to_vec();
    let n = out.numel();
    if is_device_pointer(out.as_ref().as_ptr()) {
        if out.dtype() != dtype || !out.is_contiguous() {
            return Err(Error::value("out", format!("a CUDA output must be a contiguous {} tensor", dtype.name())));
        }
        let dst = out.as_ref().as_ptr() as u64;
        // SAFETY: both buffers hold n elements of dtype.
        return unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src.ptr(), n * dtype.size(), stream) }
            .map_err(|e| crate::device::driver_error("cuMemcpyDtoDAsync", e));
    }
    let mut bytes = vec![0u8; n * dtype.size()];
    copy_to_host(src.ptr(), &mut bytes, stream)?;
    let values: Vec<f32> = match dtype {
        DType::BF16 => bytes.chunks_exact(2).map(|b| rio_core::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        DType::F16 => bytes.chunks_exact(2).map(|b| rio_core::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
    };
    let contiguous = out.is_contiguous();
    let wrong = || Error::value("out", format!("expected a contiguous float tensor of shape {shape:?}"));
    if !contiguous {
        return Err(wrong());
    }
    match out.dtype() {
        DType::F32 => out.as_mut_slice::<f32>().ok_or_else(wrong)?.copy_from_slice(&values),
        DType::BF16 => out
            .as_mut_slice::<rio_core::bf16>()
            .ok_or_else(wrong)?
            .iter_mut()
            .zip(&values)
            .for_each(|(o, &v)| *o = rio_core::bf16::from_f32(v)),
        DType::F16 => out
            .as_mut_slice::<rio_core::f16>()
            .ok_or_else(wrong)?
            .iter_mut()
            .zip(&values)
            .for_each(|(o, &v)| *o = rio_core::f16::from_f32(v)),
        other => return Err(Error::dtype("out", "float32, bfloat16 or float16", other)),
    }
    Ok(())
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn moe_route(&self, x: &TensorRef<'_>, router: &TensorRef<'_>, config: RouterConfig) -> Result<Routing> {
        let (_, e) = check_route_args(x, router, config)?;
        Self::expect_device_dtype(x, "x", router.dtype())?;
        let t = x.shape()[0];
        if t == 0 {
            return Ok(Routing { top_k: config.top_k, experts: vec![], weights: vec![] });
        }
        let xm = device_mat(x, "x", router.dtype(), self.stream)?;
        let (experts, weights, bad) = self.route_on_device(&xm, x.dtype(), router, config)?;
        let bad: Vec<i32> = bad.to_vec()?;
        check_bad_logit(bad[0], e)?;
        let mut experts_h = experts.to_vec::<u32>()?;
        let mut weights_h = weights.to_vec::<f32>()?;
        experts_h.truncate(t * config.top_k);
        weights_h.truncate(t * config.top_k);
        Ok(Routing { top_k: config.top_k, experts: experts_h, weights: weights_h })
    }

    fn moe_dispatch(&self, routing: &Routing, num_experts: usize) -> Result<Dispatch> {
        if num_experts == 0 {
            return Err(Error::value("num_experts", "needs at least one expert"));
        }
        let slots = routing.experts.len();
        let experts = DeviceBuf::from_slice(&routing.experts, self.stream)?;
        let [counts, offsets, _tiles, order, position, bad] = self.dispatch_on_device(&experts, slots, num_experts)?;
        let bad: Vec<i32> = bad.to_vec()?;
        if bad[0] != i32::MAX {
            let s = bad[0] as usize;
            return Err(Error::value(
                "routing",
                format!("slot {s} routes to expert {} but there are only {num_experts} experts", routing.experts[s]),
            ));
        }
        let trim = |mut v: Vec<u32>, n: usize| {
            v.truncate(n);
            v
        };
        Ok(Dispatch {
            counts: trim(counts.to_vec()?, num_experts),
            offsets: trim(offsets.to_vec()?, num_experts + 1),
            order: trim(order.to_vec()?, slots),
            position: trim(position.to_vec()?, slots),
        })
    }

    fn grouped_gemm(&self, x: &TensorRef<'_>, weights: &[TensorRef<'_>], offsets: &[u32], out: &mut TensorMut<'_>) -> Result<()> {
        let (s, n, k) = check_grouped_gemm_args(x, weights, offsets)?;
        let first = &weights[0];
        let dtype = first.dtype();
        out.as_ref().expect_shape("out", &[Some(s), Some(n)], "(S, N)")?;
        Self::expect_device_dtype(x, "x", dtype)?;
        let mats = weights
            .iter()
            .enumerate()
            .map(|(e, w)| {
                let arg = format!("weights[{e}]");
                w.expect_shape(&arg, &[Some(n), Some(k)], "(N, K)")?;
                if w.dtype() != dtype {
                    return Err(Error::dtype(arg, dtype.name(), w.dtype()));
                }
                device_mat(w, &arg, dtype, self.stream)
            })
            .collect::<Result<Vec<_>>>()?;
        if s == 0 || n == 0 {
            return Ok(());
        }
        let xm = device_mat(x, "x", dtype, self.stream)?;
        let w = self.weights(mats)?;
        let (off_d, tiles_d) = self.upload_groups(offsets)?;
        let groups = self.groups(&off_d, &tiles_d, weights.len(), s);
        let active = offsets.windows(2).filter(|w| w[1] > w[0]).count().max(1);
        let tensor_cores = s / active >= 16;
        // A contiguous CUDA output of fp32 or the weight dtype is written in place.
        let direct = is_device_pointer(out.as_ref().as_ptr()) && out.is_contiguous();
        if direct && (out.dtype() == DType::F32 || out.dtype() == dtype) {
            let epilogue = if out.dtype() == DType::F32 { Epilogue::F32 } else { Epilogue::Same };
            return self.gemm(&xm, None, &w, None, n, &groups, out.as_ref().as_ptr() as u64, n, epilogue, tensor_cores);
        }
        let c = DeviceBuf::alloc(s * n * 4, self.stream)?;
        self.gemm(&xm, None, &w, None, n, &groups, c.ptr(), n, Epilogue::F32, tensor_cores)?;
        store_out(&c, DType::F32, out, self.stream)?;
        self.synchronize()
    }

    fn moe_forward(&self, x: &TensorRef<'_>, weights: &MoeWeights<'_>, config: RouterConfig, out: &mut TensorMut<'_>) -> Result<()> {
        let (e, h, inter) = (weights.num_experts(), weights.hidden(), weights.intermediate());
        let dtype = weights.dtype();
        x.expect_dtype("x", &[DType::BF16, DType::F16, DType::F32])?;
        x.expect_shape("x", &[None, Some(h)], "(T, H)")?;
        check_top_k(config.top_k, e)?;
        let t = x.shape()[0];
        out.as_ref().expect_shape("out", &[Some(t), Some(h)], "(T, H)")?;
        if weights.router.dtype() != dtype {
            return Err(Error::dtype(
                "router_weight",
                format!("{} (the expert weight dtype, on CUDA)", dtype.name()),
                weights.router.dtype(),
            ));
        }
        Self::expect_device_dtype(x, "x", dtype)?;
        if t == 0 {
            return Ok(());
        }
        let g = self.gpu()?;
        let k = config.top_k;
        let slots = t * k;
        let decode = t <= DECODE_MAX_TOKENS;
        let xm = device_mat(x, "x", dtype, self.stream)?;

        // Route and dispatch, all on the device.
        let (experts, route_w, bad) = self.route_on_device(&xm, x.dtype(), &weights.router, config)?;
        let [_counts, offsets, tiles, order, position, _bad_expert] = self.dispatch_on_device(&experts, slots, e)?;
        let groups = self.groups(&offsets, &tiles, e, slots);

        // Routed experts: SwiGLU gate/up straight from x (rows read through `order`), then down.
        let mats = |arg: &str| -> Result<Weights> {
            let m = weights.experts.iter().enumerate().map(|(i, m)| {
                let t = match arg {
                    "gate" => &m.gate,
                    "up" => &m.up,
                    _ => &m.down,
                };
                device_mat(t, &format!("experts[{i}].{arg}"), dtype, self.stream)
            });
            self.weights(m.collect::<Result<Vec<_>>>()?)
        };
        let (gate, up, down) = (mats("gate")?, mats("up")?, mats("down")?);
        let act = DeviceBuf::alloc(slots * inter * dtype.size(), self.stream)?;
        let act_mat = Mat::device(act.ptr(), slots, inter, dtype);
        self.gemm(&xm, Some((order.ptr(), k)), &gate, Some(&up), inter, &groups, act.ptr(), inter, Epilogue::Swiglu, !decode)?;
        let y = DeviceBuf::alloc(slots * h * 4, self.stream)?;
        self.gemm(&act_mat, None, &down, None, h, &groups, y.ptr(), h, Epilogue::F32, !decode)?;

        // Shared expert: one group of all T tokens.
        let mut shared_y = None;
        let mut gate_w = None;
        if let Some(s) = &weights.shared {
            let si = s.mats.gate.shape()[0];
            let (s_off, s_tiles) = self.upload_groups(&[0, t as u32])?;
            let s_groups = self.groups(&s_off, &s_tiles, 1, t);
            let sg = self.weights(vec![device_mat(&s.mats.gate, "shared_gate_proj", dtype, self.stream)?])?;
            let su = self.weights(vec![device_mat(&s.mats.up, "shared_up_proj", dtype, self.stream)?])?;
            let sd = self.weights(vec![device_mat(&s.mats.down, "shared_down_proj", dtype, self.stream)?])?;
            let s_act = DeviceBuf::alloc(t * si * dtype.size(), self.stream)?;
            self.gemm(&xm, None, &sg, Some(&su), si, &s_groups, s_act.ptr(), si, Epilogue::Swiglu, !decode)?;
            let ys = DeviceBuf::alloc(t * h * 4, self.stream)?;
            self.gemm(&Mat::device(s_act.ptr(), t, si, dtype), None, &sd, None, h, &s_groups, ys.ptr(), h, Epilogue::F32, !decode)?;
            shared_y = Some(ys);
            if let Some(gw) = &s.gate_weight {
                gate_w = Some(device_mat(gw, "shared_expert_gate", dtype, self.stream)?);
            }
        }

        // Combine (fused weighted scatter-add + gated shared expert) into a [T, H] buffer of the
        // weight dtype, then into `out`.
        let combined = DeviceBuf::alloc(t * h * dtype.size(), self.stream)?;
        let (yp, pp, wp) = (y.ptr(), position.ptr(), route_w.ptr());
        let ysp = shared_y.as_ref().map_or(0u64, |b| b.ptr());
        let gwp = gate_w.as_ref().map_or(0u64, |m| m.ptr);
        let (kk, hh, ldx, ldo) = (k as i32, h as i32, xm.ld as i64, h as i64);
        let (xp, op) = (xm.ptr, combined.ptr());
        g.launch(
            &format!("moe_combine_{}", dtype_suffix(dtype)),
            (t as u32, 1, 1),
            256,
            0,
            self.stream,
            &mut params![yp, pp, wp, kk, hh, ysp, xp, ldx, gwp, op, ldo],
        )?;
        store_out(&combined, dtype, out, self.stream)?;
        // Non-finite router logits turn their tokens' weights into NaN on the device; a host output
        // (already synchronised) also names the first one, as the CPU backend does.
        if !is_device_pointer(out.as_ref().as_ptr()) {
            let bad: Vec<i32> = bad.to_vec()?;
            check_bad_logit(bad[0], e)?;
        }
        Ok(())
    }
}
