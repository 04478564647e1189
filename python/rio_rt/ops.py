"""Tensor operations of the MoE layer (spec section 5), on numpy arrays and CPU torch tensors.

Every function takes numpy arrays (float32, float16, ``ml_dtypes.bfloat16``; int32/int64 for
indices) or CPU torch tensors, reads contiguous inputs in place (copying only layouts the kernels
cannot read, such as transposed views), releases the GIL while the Rust kernels run, and returns
results of the same kind as its first tensor argument: numpy in, numpy out; torch in, torch out.
Results are written straight into memory the caller's library owns (or adopts through DLPack),
never copied afterwards. Functions with an ``out=`` argument write into that array instead.
There is no autograd: torch tensors that require grad are read detached.

Bad arguments raise ``ValueError`` (shapes, values) or ``TypeError`` (dtypes, non-tensors) naming
the argument, what was expected and what was given.
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple, Union

from rio_rt import _rio_rt

#: A numpy array or a CPU torch tensor.
Array = Any
#: Expert weights: one ``(E, N, K)`` tensor or a sequence of ``(N, K)`` tensors.
ExpertWeights = Union[Array, Sequence[Array]]

__all__ = [
    "grouped_gemm",
    "moe_combine",
    "moe_dispatch",
    "moe_forward",
    "moe_router",
    "moe_topk_softmax",
]


def moe_router(x: Array, router_weight: Array, top_k: int, renormalize: bool = True) -> Tuple[Array, Array]:
    """Routes each token of ``x (T, H)`` to its ``top_k`` experts.

    ``logits = x @ router_weight.T`` (``router_weight (E, H)``) is computed in the dtype of ``x``,
    softmaxed over all E experts in float32, and the top-k taken (ties to the lower index),
    renormalised to sum to 1 unless ``renormalize`` is false (Qwen3-MoE's ``norm_topk_prob``).

    Returns ``(weights (T, k) float32, experts (T, k) int32)``, slots by decreasing weight.
    Raises ``ValueError`` when ``top_k`` is not in ``1..E`` or a logit is NaN or infinite.
    """
    return _rio_rt.moe_router(x, router_weight, top_k, renormalize)


def moe_topk_softmax(logits: Array, top_k: int, renormalize: bool = True) -> Tuple[Array, Array]:
    """:func:`moe_router` from precomputed router ``logits (T, E)``."""
    return _rio_rt.moe_topk_softmax(logits, top_k, renormalize)


def moe_dispatch(experts: Array, num_experts: int) -> Tuple[Array, Array, Array, Array]:
    """Groups routed (token, slot) pairs by expert with a stable counting sort.

    ``experts`` is ``(T, k)`` (or flat ``(T*k,)``) int32/int64 expert ids. Returns int32
    ``(counts (E,), offsets (E+1,), order (T*k,), position)``: sorted row ``p`` holds flat slot
    ``order[p]`` (token ``order[p] // k``), expert ``e`` owns sorted rows
    ``offsets[e]:offsets[e+1]``, and ``position`` (shaped like ``experts``) inverts ``order``.
    """
    return tuple(_rio_rt.moe_dispatch(experts, num_experts))  # type: ignore[return-value]


def grouped_gemm(x: Array, weights: ExpertWeights, offsets: Union[Array, Sequence[int]], *, out: Array | None = None) -> Array:
    """``out[offsets[e]:offsets[e+1]] = x[offsets[e]:offsets[e+1]] @ weights[e].T`` for every expert.

    ``x (S, K)``; ``weights (E, N, K)`` or a list of E ``(N, K)`` matrices (bf16, f16 or f32;
    ``x`` is converted to bf16 for bf16 weights, else f32; accumulation in f32); ``offsets``
    rises from 0 to S in E steps. Returns ``(S, N)`` in the dtype of ``x``, or writes into ``out``.
    """
    return _rio_rt.grouped_gemm(x, weights, offsets, out=out)


def moe_combine(expert_out: Array, weights: Array, position: Array, *, out: Array | None = None) -> Array:
    """``out[t] = sum_j weights[t, j] * expert_out[position[t, j]]``, the scatter back to tokens.

    ``expert_out (S, H)`` in expert-sorted order, ``weights (T, k)``, ``position (T, k)`` or
    ``(T*k,)`` as returned by :func:`moe_dispatch`. Sums in float32; returns ``(T, H)`` in the dtype
    of ``expert_out``, or writes into ``out``.
    """
    return _rio_rt.moe_combine(expert_out, weights, position, out=out)


def moe_forward(
    x: Array,
    router_weight: Array,
    gate_up_proj: Array | None = None,
    down_proj: Array | Sequence[Array] | None = None,
    *,
    top_k: int,
    renormalize: bool = True,
    gate_proj: Sequence[Array] | None = None,
    up_proj: Sequence[Array] | None = None,
    shared_gate_proj: Array | None = None,
    shared_up_proj: Array | None = None,
    shared_down_proj: Array | None = None,
    shared_expert_gate: Array | None = None,
    out: Array | None = None,
) -> Array:
    """The whole Qwen3.5-MoE sparse block on ``x (T, H)``; returns ``(T, H)`` in the dtype of ``x``.

    ``y = sum_{e in topk} w_e * down_e(silu(gate_e x) * up_e x)
    + sigmoid(shared_expert_gate . x) * shared_down(silu(shared_gate x) * shared_up x)``.

    Expert weights come in either layout:

    - fused: ``gate_up_proj (E, 2I, H)`` (gate rows first) and ``down_proj (E, H, I)``;
    - per expert: ``gate_proj=[(I, H)] * E``, ``up_proj=[(I, H)] * E``, ``down_proj=[(H, I)] * E``.

    The fused layout is the cheapest to pass (four tensors); per-expert lists are borrowed one
    matrix at a time (about 0.5 µs each for numpy, a few µs for torch). All expert and shared
    weights share one dtype (bf16, f16 or f32). The shared expert
    (``shared_gate_proj (I_s, H)``, ``shared_up_proj (I_s, H)``, ``shared_down_proj (H, I_s)``) is
    optional; ``shared_expert_gate`` (``(1, H)`` or ``(H,)``) gates it with a sigmoid, and without
    it the shared expert is added ungated. ``renormalize=False`` is Qwen3-MoE with
    ``norm_topk_prob`` off.
    """
    return _rio_rt.moe_forward(
        x,
        router_weight,
        gate_up_proj,
        down_proj,
        top_k=top_k,
        renormalize=renormalize,
        gate_proj=gate_proj,
        up_proj=up_proj,
        shared_gate_proj=shared_gate_proj,
        shared_up_proj=shared_up_proj,
        shared_down_proj=shared_down_proj,
        shared_expert_gate=shared_expert_gate,
        out=out,
    )
