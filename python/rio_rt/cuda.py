"""The CUDA backend: availability, and the MoE operations on CUDA torch tensors.

``cuda_is_available()`` never raises: on a machine without an NVIDIA GPU (or a build without nvcc)
it is False and ``status()["reason"]`` says why. The operations take CUDA torch tensors, share
them with the Rust core through DLPack without copies, and run on torch's current stream.

The driver is loaded at run time. cuBLAS (used for dense GEMMs only) is looked up in the
``nvidia-cublas`` wheel that torch installs when it is not on the library path.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from typing import TYPE_CHECKING, Any

from rio_rt import _rio_rt

if TYPE_CHECKING:
    import torch

__all__ = [
    "cuda_is_available",
    "status",
    "kernel_images",
    "moe_route",
    "moe_dispatch",
    "grouped_gemm",
    "moe_forward",
    "launch",
    "i64",
    "rmsnorm",
    "rope_partial",
    "attention_decode",
    "gdn_conv_update",
    "gdn_recurrent_step",
    "argmax",
    "sample_top_k",
    "soft_embedding_full",
    "soft_embedding_top_k",
    "dense_gemm",
]


@functools.cache
def _preload_cuda_libraries() -> None:
    """Loads cuBLAS from the ``nvidia`` wheels (torch's dependency) so the driver-level dlopen by
    soname finds it; harmless when it is absent or already on the path."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return
    for root in spec.submodule_search_locations:
        for sub in ("cu13/lib", "cublas/lib"):
            lib_dir = os.path.join(root, sub)
            if not os.path.isdir(lib_dir):
                continue
            for name in sorted(os.listdir(lib_dir)):
                if name.startswith(("libcublasLt.so.", "libcublas.so.")):
                    try:
                        ctypes.CDLL(os.path.join(lib_dir, name), mode=ctypes.RTLD_GLOBAL)
                    except OSError:
                        pass


def status() -> dict[str, Any]:
    """What the CUDA backend found: ``available`` (bool), ``reason`` (why not, else ""), ``nvcc``
    (the compiler of the embedded kernels, or None), ``kernel_modules``, ``driver_version``,
    ``devices`` (name, compute capability, memory) and ``cublas``."""
    _preload_cuda_libraries()
    return dict(_rio_rt.cuda_status())


def cuda_is_available() -> bool:
    """True when the CUDA kernels can run on device 0 (driver 13.0+, compute capability 8.0+,
    kernels embedded at build time)."""
    return bool(status()["available"])


def kernel_images() -> dict[str, dict[str, bytes]]:
    """The embedded kernels: ``{module: {"ptx_80", "ptx_90", "cubin_80", "cubin_90"}}``; empty for
    a build without nvcc."""
    return dict(_rio_rt.cuda_kernel_images())


def _require() -> None:
    s = status()
    if not s["available"]:
        raise RuntimeError(f"no CUDA GPU: {s['reason']}")


def _stream(device: "torch.device") -> int:
    import torch

    if device.type != "cuda":
        raise ValueError(f"expected CUDA tensors, got a tensor on {device}")
    if (device.index or 0) != 0:
        raise ValueError(f"the CUDA backend runs on device 0, got {device}")
    return int(torch.cuda.current_stream(device).cuda_stream)


def moe_route(x: "torch.Tensor", router_weight: "torch.Tensor", top_k: int, renormalize: bool = True) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Router on the GPU: ``softmax(x · router_weightᵀ)`` in fp32 over all experts, top-k, optional
    renormalisation. Returns ``(weights float32 [T, k], experts int64 [T, k])`` on ``x.device``, in
    the order of ``rio_rt.ops.moe_router``."""
    import torch

    _require()
    experts, weights = _rio_rt.cuda_moe_route(x, router_weight, int(top_k), bool(renormalize), _stream(x.device))
    t = x.shape[0]
    return (
        torch.tensor(weights, dtype=torch.float32, device=x.device).reshape(t, top_k),
        torch.tensor(experts, dtype=torch.int64, device=x.device).reshape(t, top_k),
    )


def moe_dispatch(experts: "torch.Tensor", num_experts: int) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Groups routed slots by expert on the GPU (a stable counting sort): ``(counts, offsets,
    order, position)`` as flat int64 tensors on the CPU, the values of ``rio_rt.ops.moe_dispatch``."""
    import torch

    _require()
    if experts.ndim != 2:
        raise ValueError(f"experts: expected shape (T, k), got {tuple(experts.shape)}")
    flat = [int(v) for v in experts.reshape(-1).tolist()]
    if any(v < 0 for v in flat):
        raise ValueError("experts: expert ids must be non-negative")
    counts, offsets, order, position = _rio_rt.cuda_moe_dispatch(flat, int(experts.shape[1]), int(num_experts))
    return tuple(torch.tensor(v, dtype=torch.int64) for v in (counts, offsets, order, position))  # type: ignore[return-value]


def grouped_gemm(x: "torch.Tensor", weights: "torch.Tensor", offsets: "torch.Tensor | list[int]", out: "torch.Tensor | None" = None) -> "torch.Tensor":
    """``out[rows of e] = x[rows of e] · weights[e]ᵀ`` on CUDA tensors: ``x [S, K]``, ``weights
    [E, N, K]``, ``offsets`` (E + 1 rising row offsets). ``out`` defaults to a new float32 tensor."""
    import torch

    _require()
    if out is None:
        out = torch.empty(x.shape[0], weights.shape[1], dtype=torch.float32, device=x.device)
    offs = [int(v) for v in (offsets.tolist() if hasattr(offsets, "tolist") else offsets)]
    if any(v < 0 for v in offs):
        raise ValueError("offsets: must be non-negative")
    _rio_rt.cuda_grouped_gemm(x, weights, offs, out, _stream(x.device))
    return out


def moe_forward(
    x: "torch.Tensor",
    router_weight: "torch.Tensor",
    gate_up_proj: "torch.Tensor",
    down_proj: "torch.Tensor",
    top_k: int,
    renormalize: bool = True,
    shared_gate_proj: "torch.Tensor | None" = None,
    shared_up_proj: "torch.Tensor | None" = None,
    shared_down_proj: "torch.Tensor | None" = None,
    shared_expert_gate: "torch.Tensor | None" = None,
    out: "torch.Tensor | None" = None,
) -> "torch.Tensor":
    """The sparse MoE block (spec section 5) on the GPU, fused weight layout: route, dispatch,
    SwiGLU experts, combine and the gated shared expert, all on torch's current stream.
    ``x [T, H]``; ``gate_up_proj [E, 2I, H]``; ``down_proj [E, H, I]``; every tensor on device 0
    in the weight dtype. Returns ``out [T, H]`` (a new tensor unless given)."""
    import torch

    _require()
    if out is None:
        out = torch.empty_like(x)
    _rio_rt.cuda_moe_forward(
        x,
        router_weight,
        gate_up_proj,
        down_proj,
        int(top_k),
        bool(renormalize),
        out,
        _stream(x.device),
        shared_gate_proj,
        shared_up_proj,
        shared_down_proj,
        shared_expert_gate,
    )
    return out


class i64(int):
    """Marks a kernel argument as a 64-bit integer (``long long``) for :func:`launch`."""


def launch(name: str, grid: tuple[int, ...] | int, block: int, args: "list[Any]", shared_bytes: int = 0) -> None:
    """Launches the embedded kernel ``name`` on torch's current stream of device 0.

    ``args`` in the kernel's parameter order: a CUDA tensor or None is a pointer, :class:`i64` a
    ``long long``, another ``int`` an ``int``, a ``float`` a ``float``. The caller must match the
    kernel's signature in ``kernels/*.cu`` and size the tensors for the launch: this is the raw
    interface the kernel tests and benchmarks use."""
    import torch

    _require()
    packed: list[tuple[str, Any]] = []
    for i, a in enumerate(args):
        if a is None:
            packed.append(("ptr", 0))
        elif isinstance(a, torch.Tensor):
            if a.device.type != "cuda":
                raise ValueError(f"args[{i}]: expected a CUDA tensor, got one on {a.device}")
            packed.append(("ptr", int(a.data_ptr())))
        elif isinstance(a, bool):
            packed.append(("i32", int(a)))
        elif isinstance(a, i64):
            packed.append(("i64", int(a)))
        elif isinstance(a, int):
            packed.append(("i32", a))
        elif isinstance(a, float):
            packed.append(("f32", a))
        else:
            raise TypeError(f"args[{i}]: expected a CUDA tensor, None, int or float, got {type(a).__name__}")
    g = (grid, 1, 1) if isinstance(grid, int) else tuple(grid) + (1,) * (3 - len(grid))
    stream = int(torch.cuda.current_stream(0).cuda_stream)
    _rio_rt.cuda_launch(name, g, int(block), int(shared_bytes), stream, packed)


# --- Decode kernels (kernels/norm_rope.cu, attention_decode.cu, gated_delta.cu, sampling.cu,
# soft_embedding.cu) on CUDA torch tensors. Each checks shapes and dtypes, then launches.

_SUFFIX = {"torch.bfloat16": "bf16", "torch.float16": "f16", "torch.float32": "f32"}
_TOPK_CHUNK = 4096  # kernels/topk.cuh
_TOPK_MAX = 64


def _suffix(t: "torch.Tensor", arg: str) -> str:
    name = _SUFFIX.get(str(t.dtype))
    if name is None:
        raise TypeError(f"{arg}: expected bfloat16, float16 or float32, got {t.dtype}")
    if t.device.type != "cuda":
        raise ValueError(f"{arg}: expected a CUDA tensor, got one on {t.device}")
    return name


def _rows(t: "torch.Tensor", arg: str) -> "torch.Tensor":
    """2-D with contiguous rows (a copy only when the inner stride is not 1)."""
    if t.ndim != 2:
        raise ValueError(f"{arg}: expected a 2-D tensor, got shape {tuple(t.shape)}")
    return t if t.stride(1) == 1 else t.contiguous()


def rmsnorm(x: "torch.Tensor", weight: "torch.Tensor", eps: float = 1e-6) -> "torch.Tensor":
    """Qwen3.5's RMSNorm: ``x * rsqrt(mean(x²) + eps) * (1 + weight)`` over the last axis, in fp32."""
    import torch

    sfx = _suffix(x, "x")
    if weight.dtype != x.dtype or weight.shape != (x.shape[-1],):
        raise ValueError(f"weight: expected shape ({x.shape[-1]},) and dtype {x.dtype}, got {tuple(weight.shape)} {weight.dtype}")
    xr = _rows(x.reshape(-1, x.shape[-1]), "x")
    out = torch.empty(xr.shape, dtype=x.dtype, device=x.device)
    launch(f"rmsnorm_one_plus_w_{sfx}", xr.shape[0], 256, [xr, i64(xr.stride(0)), weight.contiguous(), float(eps), xr.shape[1], out, i64(out.stride(0))])
    return out.reshape(x.shape)


def rope_partial(x: "torch.Tensor", positions: "torch.Tensor", rot_dim: int, theta: float) -> "torch.Tensor":
    """Rotary embedding on the first ``rot_dim`` dims of every head of ``x [T, heads, head_dim]``
    (rotate-half pairs), in place; ``positions [T]`` int. Returns ``x``."""
    import torch

    sfx = _suffix(x, "x")
    if x.ndim != 3 or x.stride(2) != 1:
        raise ValueError(f"x: expected (tokens, heads, head_dim) with contiguous heads, got shape {tuple(x.shape)}")
    if rot_dim <= 0 or rot_dim % 2 or rot_dim > x.shape[2]:
        raise ValueError(f"rot_dim: must be even and in 2..={x.shape[2]}, got {rot_dim}")
    if positions.shape != (x.shape[0],):
        raise ValueError(f"positions: expected shape ({x.shape[0]},), got {tuple(positions.shape)}")
    pos = positions.to(device=x.device, dtype=torch.int32).contiguous()
    launch(f"rope_partial_{sfx}", x.shape[0], 256, [x, i64(x.stride(0)), i64(x.stride(1)), x.shape[1], int(rot_dim), pos, float(theta)])
    return x


def attention_decode(q: "torch.Tensor", k_cache: "torch.Tensor", v_cache: "torch.Tensor", lengths: "torch.Tensor", scale: float) -> "torch.Tensor":
    """One query per sequence against its KV cache: ``q [B, Hq, D]``, caches ``[B, Hkv, Tmax, D]``
    (contiguous), ``lengths [B]`` (cached positions to attend, the new one included). Returns
    ``softmax(q·Kᵀ·scale)·V`` as ``[B, Hq, D]``."""
    import torch

    sfx = _suffix(q, "q")
    b, hq, d = q.shape
    if k_cache.shape != v_cache.shape or k_cache.ndim != 4 or k_cache.shape[0] != b or k_cache.shape[3] != d:
        raise ValueError(f"k_cache/v_cache: expected equal shapes (B, Hkv, Tmax, {d}), got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    hkv = k_cache.shape[1]
    if hq % hkv or d % 32 or d > 256:
        raise ValueError(f"q: heads ({hq}) must be a multiple of KV heads ({hkv}), head_dim ({d}) a multiple of 32 up to 256")
    if int(lengths.max()) > k_cache.shape[2]:
        raise ValueError(f"lengths: at most {k_cache.shape[2]} (the cache length), got {int(lengths.max())}")
    kc, vc, qc = k_cache.contiguous(), v_cache.contiguous(), q.contiguous()
    for t, arg in ((kc, "k_cache"), (vc, "v_cache")):
        if t.dtype != q.dtype:
            raise TypeError(f"{arg}: expected {q.dtype}, got {t.dtype}")
    out = torch.empty_like(qc)
    lens = lengths.to(device=q.device, dtype=torch.int32).contiguous()
    launch(f"attention_decode_{sfx}", (hq, b), 256,
           [qc, i64(hq * d), kc, vc, i64(kc.stride(0)), i64(kc.stride(1)), lens, hq, hkv, d, float(scale), out, i64(hq * d)])
    return out


def gdn_conv_update(x: "torch.Tensor", conv_state: "torch.Tensor", weight: "torch.Tensor", bias: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Gated DeltaNet's causal depthwise conv for one new token with SiLU: ``x [B, C]``,
    ``conv_state [B, C, L]`` (updated in place: shifted by one, x appended), ``weight [C, K]``
    with ``K <= L + 1``. Returns ``silu(conv) [B, C]``."""
    import torch

    sfx = _suffix(x, "x")
    bsz, c = x.shape
    if conv_state.ndim != 3 or conv_state.shape[:2] != (bsz, c) or not conv_state.is_contiguous() or conv_state.dtype != x.dtype:
        raise ValueError(f"conv_state: expected a contiguous ({bsz}, {c}, L) {x.dtype} tensor, got {tuple(conv_state.shape)} {conv_state.dtype}")
    w = weight.reshape(c, -1).contiguous()
    if w.shape[1] > conv_state.shape[2] + 1:
        raise ValueError(f"weight: kernel {w.shape[1]} is longer than the state ({conv_state.shape[2]}) plus the new token")
    xr = _rows(x, "x")
    out = torch.empty_like(xr)
    launch(f"gdn_conv_update_{sfx}", ((c + 255) // 256, bsz), 256,
           [xr, i64(xr.stride(0)), conv_state, c, conv_state.shape[2], w, w.shape[1], None if bias is None else bias.contiguous(), out, i64(c)])
    return out


def gdn_recurrent_step(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", g: "torch.Tensor", beta: "torch.Tensor", state: "torch.Tensor",
                       scale: float | None = None, l2norm: bool = True) -> "torch.Tensor":
    """One decode step of the gated delta rule: ``q, k [B, Hk, Dk]``, ``v [B, Hv, Dv]``, ``g, beta
    [B, Hv]`` (log decay and write strength), ``state [B, Hv, Dk, Dv]`` fp32, updated in place.
    Returns ``o [B, Hv, Dv]``."""
    import torch

    sfx = _suffix(q, "q")
    b, hk, dk = q.shape
    hv, dv = v.shape[1], v.shape[2]
    if k.shape != q.shape or v.shape[0] != b or hv % hk or dk > 256 or dv > 256 or dv % 32:
        raise ValueError(f"q/k/v: expected q, k (B, Hk, Dk <= 256) and v (B, Hv, Dv <= 256, a multiple of 32) with Hv a multiple of Hk, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if state.shape != (b, hv, dk, dv) or state.dtype != torch.float32 or not state.is_contiguous():
        raise ValueError(f"state: expected a contiguous float32 ({b}, {hv}, {dk}, {dv}) tensor, got {tuple(state.shape)} {state.dtype}")
    qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
    gf, bf = g.float().contiguous(), beta.float().contiguous()
    out = torch.empty_like(vc)
    s = dk**-0.5 if scale is None else scale
    launch(f"gdn_recurrent_step_{sfx}", (hv, b), dv,
           [qc, kc, i64(hk * dk), vc, i64(hv * dv), gf, bf, state, hk, hv, dk, dv, bool(l2norm), float(s), out, i64(hv * dv)])
    return out


def argmax(logits: "torch.Tensor") -> "torch.Tensor":
    """Greedy token of every row of ``logits [B, V]`` (ties to the lower id), int64 ``[B]``."""
    import torch

    sfx = _suffix(logits, "logits")
    lr = _rows(logits, "logits")
    out = torch.empty(lr.shape[0], dtype=torch.int32, device=lr.device)
    launch(f"argmax_rows_{sfx}", lr.shape[0], 1024, [lr, i64(lr.stride(0)), lr.shape[1], out])
    return out.long()


def _topk_candidates(logits: "torch.Tensor", temperature: float, k: int) -> tuple["torch.Tensor", "torch.Tensor", int]:
    import torch

    sfx = _suffix(logits, "logits")
    lr = _rows(logits, "logits")
    rows, vocab = lr.shape
    chunks = (vocab + _TOPK_CHUNK - 1) // _TOPK_CHUNK
    values = torch.empty(rows, chunks * k, dtype=torch.float32, device=lr.device)
    index = torch.empty(rows, chunks * k, dtype=torch.int32, device=lr.device)
    launch(f"topk_chunks_{sfx}", (chunks, rows), 256, [lr, i64(lr.stride(0)), vocab, 1.0 / temperature, k, values, index])
    return values, index, chunks * k


def sample_top_k(logits: "torch.Tensor", top_k: int, uniform: "torch.Tensor", temperature: float = 1.0, top_p: float = 1.0) -> "torch.Tensor":
    """Top-k (then top-p) sampling of every row of ``logits [B, V]`` at ``temperature``, drawing with
    the given ``uniform [B]`` numbers in [0, 1) (inverse CDF over the kept tokens, best first).
    int64 ``[B]``."""
    import torch

    if not 1 <= top_k <= _TOPK_MAX:
        raise ValueError(f"top_k: must be in 1..={_TOPK_MAX}, got {top_k}")
    if not 0 < top_p <= 1 or temperature <= 0:
        raise ValueError(f"top_p must be in (0, 1] and temperature > 0, got {top_p} and {temperature}")
    values, index, cands = _topk_candidates(logits, temperature, top_k)
    u = uniform.to(device=logits.device, dtype=torch.float32).contiguous()
    out = torch.empty(logits.shape[0], dtype=torch.int32, device=logits.device)
    launch("sample_topk_finish", logits.shape[0], 256, [values, index, cands, top_k, float(top_p), u, out], shared_bytes=4 * cands)
    return out.long()


def _row_stats(logits: "torch.Tensor", temperature: float) -> "torch.Tensor":
    import torch

    sfx = _suffix(logits, "logits")
    lr = _rows(logits, "logits")
    stats = torch.empty(lr.shape[0], 3, dtype=torch.float32, device=lr.device)
    launch(f"soft_row_stats_{sfx}", lr.shape[0], 1024, [lr, i64(lr.stride(0)), lr.shape[1], 1.0 / temperature, stats])
    return stats


def soft_embedding_full(logits: "torch.Tensor", embed: "torch.Tensor", temperature: float = 1.0) -> tuple["torch.Tensor", "torch.Tensor"]:
    """SwiReasoning's soft input: ``p = softmax(logits / T)`` over the whole vocabulary, unfiltered;
    returns ``(p @ embed [B, H] float32, entropy of p [B])``. ``embed [V, H]``, H a multiple of 8."""
    import torch

    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    lr = _rows(logits, "logits")
    esfx = _suffix(embed, "embed")
    v, h = embed.shape
    if lr.shape[1] != v or h % 8:
        raise ValueError(f"embed: expected ({lr.shape[1]}, H) with H a multiple of 8, got {tuple(embed.shape)}")
    if _SUFFIX[str(lr.dtype)] not in ("f32", esfx):
        raise TypeError(f"logits: expected float32 or the embedding dtype {embed.dtype}, got {lr.dtype}")
    e = embed.contiguous()
    stats = _row_stats(lr, temperature)
    mix = torch.zeros(lr.shape[0], h, dtype=torch.float32, device=lr.device)
    name = f"soft_mix_full_{_SUFFIX[str(lr.dtype)]}_{esfx}"
    for r0 in range(0, lr.shape[0], 8):
        rows = min(8, lr.shape[0] - r0)
        grid = ((h // 8 + 255) // 256, (v + 255) // 256)
        launch(name, grid, 256, [lr[r0:], i64(lr.stride(0)), rows, v, 1.0 / temperature, stats[r0:], e, h, mix[r0:]])
    return mix, stats[:, 2].clone()


def soft_embedding_top_k(logits: "torch.Tensor", embed: "torch.Tensor", temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                         min_p: float = 0.0, max_topk: int = 10) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Soft Thinking's concept token (swireasoning.md 2.2): ``softmax(logits / T)``, its entropy,
    top-k renorm (0: off), top-p renorm, relative min-p, the best ``max_topk`` renormalised.
    Returns ``(mix [B, H] float32, index [B, max_topk] int64 (-1 unused), weight [B, max_topk],
    entropy [B])``."""
    import torch

    if not 1 <= max_topk <= _TOPK_MAX or not 0 <= top_k <= _TOPK_MAX:
        raise ValueError(f"max_topk and top_k: at most {_TOPK_MAX} (top_k 0 = off), got {max_topk} and {top_k}")
    if temperature <= 0 or not 0 < top_p <= 1 or min_p < 0:
        raise ValueError(f"temperature > 0, top_p in (0, 1], min_p >= 0 required, got {temperature}, {top_p}, {min_p}")
    lr = _rows(logits, "logits")
    esfx = _suffix(embed, "embed")
    if embed.shape[0] != lr.shape[1]:
        raise ValueError(f"embed: expected {lr.shape[1]} rows (the vocabulary), got {embed.shape[0]}")
    k = max(top_k, max_topk)
    values, index, cands = _topk_candidates(lr, temperature, k)
    stats = _row_stats(lr, temperature)
    b, h = lr.shape[0], embed.shape[1]
    out_index = torch.empty(b, max_topk, dtype=torch.int32, device=lr.device)
    out_weight = torch.empty(b, max_topk, dtype=torch.float32, device=lr.device)
    mix = torch.empty(b, h, dtype=torch.float32, device=lr.device)
    launch(f"soft_topk_finish_{esfx}", b, 256,
           [values, index, cands, stats, top_k, float(top_p), float(min_p), max_topk, embed.contiguous(), h, out_index, out_weight, mix],
           shared_bytes=4 * cands)
    return mix, out_index.long(), out_weight, stats[:, 2].clone()


def dense_gemm(x: "torch.Tensor", weight: "torch.Tensor", out: "torch.Tensor | None" = None) -> "torch.Tensor":
    """``x [M, K] · weight [N, K]ᵀ`` through cuBLAS (fp32 accumulation); ``out`` defaults to the
    input dtype."""
    import torch

    _require()
    if out is None:
        out = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
    _rio_rt.cuda_dense_gemm(x, weight, out, _stream(x.device))
    return out
