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
    renormalisation. Returns ``(experts int64 [T, k], weights float32 [T, k])`` on ``x.device``."""
    import torch

    _require()
    experts, weights = _rio_rt.cuda_moe_route(x, router_weight, int(top_k), bool(renormalize), _stream(x.device))
    t = x.shape[0]
    return (
        torch.tensor(experts, dtype=torch.int64, device=x.device).reshape(t, top_k),
        torch.tensor(weights, dtype=torch.float32, device=x.device).reshape(t, top_k),
    )


def moe_dispatch(experts: "torch.Tensor", num_experts: int) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Groups routed slots by expert on the GPU (a stable counting sort): ``(counts, offsets,
    order, position)`` as int64 tensors on the CPU, the same as ``rio_rt.ops.moe_dispatch``."""
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
