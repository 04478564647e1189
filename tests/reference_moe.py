"""An independent float64 numpy twin of the Qwen3.5-MoE sparse block (spec section 5) and its ops.

Written from the spec, not from the Rust code: every rio_rt.ops test compares against these.
Inputs are widened to float64 first (bf16/f16 values are exact in float64), so the only
differences a test sees are rio_rt's own rounding (stated per dtype in the tests).
"""
from __future__ import annotations

import numpy as np


def as64(a) -> np.ndarray:
    """A numpy float64 copy of a numpy array (ml_dtypes bf16 included) or torch tensor."""
    if hasattr(a, "detach"):
        import torch

        return a.detach().to(torch.float64).numpy()
    return np.asarray(a).astype(np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(probs: np.ndarray, k: int, hint: np.ndarray | None = None, tol: float = 0.0) -> np.ndarray:
    """Top-k experts per row by decreasing probability, ties to the lower index.

    With a ``hint`` (another implementation's choice), rows whose chosen set differs are
    accepted only if the hinted set is a valid top-k within ``tol`` (a near tie that rounding
    may break either way); then the hint's set is used, so later ops compare like with like.
    """
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    if hint is None:
        return order
    out = order.copy()
    for t in range(probs.shape[0]):
        mine, theirs = set(order[t].tolist()), set(np.asarray(hint[t]).tolist())
        if mine == theirs:
            continue
        rest = [e for e in range(probs.shape[1]) if e not in theirs]
        weakest_chosen = min(probs[t, e] for e in theirs)
        strongest_left = max((probs[t, e] for e in rest), default=-np.inf)
        assert weakest_chosen >= strongest_left - tol, (
            f"token {t}: experts {sorted(theirs)} are not a top-{k} (reference {sorted(mine)}, "
            f"weakest chosen p={weakest_chosen:.6g} < best left p={strongest_left:.6g} - {tol})"
        )
        out[t] = sorted(theirs, key=lambda e: (-probs[t, e], e))
    return out


def router(x, router_weight, top_k: int, renormalize: bool = True, hint=None, tol: float = 0.0):
    """(weights [T, k], experts [T, k]) from softmax(x · Wᵀ) over all experts, then top-k."""
    probs = softmax(as64(x) @ as64(router_weight).T)
    return topk_weights(probs, top_k, renormalize, hint, tol)


def topk_weights(probs: np.ndarray, top_k: int, renormalize: bool, hint=None, tol: float = 0.0):
    experts = topk(probs, top_k, hint, tol)
    weights = np.take_along_axis(probs, experts, axis=-1)
    if renormalize:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    return weights, experts


def dispatch(experts: np.ndarray, num_experts: int):
    """(counts [E], offsets [E+1], order [T*k], position [T*k]): a stable sort of slots by expert."""
    flat = np.asarray(experts).reshape(-1)
    counts = np.bincount(flat, minlength=num_experts)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    order = np.argsort(flat, kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return counts, offsets, order, position


def grouped_gemm(x, weights, offsets) -> np.ndarray:
    """Rows offsets[e]:offsets[e+1] of x times weights[e]ᵀ."""
    x = as64(x)
    n = as64(weights[0]).shape[0]
    out = np.zeros((x.shape[0], n))
    for e in range(len(weights)):
        lo, hi = int(offsets[e]), int(offsets[e + 1])
        out[lo:hi] = x[lo:hi] @ as64(weights[e]).T
    return out


def combine(expert_out, weights, position) -> np.ndarray:
    """out[t] = Σ_j weights[t, j] · expert_out[position[t, j]]."""
    y, w = as64(expert_out), as64(weights)
    pos = np.asarray(position).reshape(w.shape)
    return np.einsum("tj,tjh->th", w, y[pos])


def silu(v: np.ndarray) -> np.ndarray:
    return v / (1.0 + np.exp(-v))


def swiglu(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """down(silu(gate·x) ⊙ up·x) for rows of x; matrices are (out, in)."""
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


def moe_forward(x, router_weight, gate, up, down, top_k: int, renormalize: bool = True, shared=None,
                shared_expert_gate=None, hint=None, tol: float = 0.0) -> np.ndarray:
    """The sparse block, token by token as the spec writes it.

    ``gate``/``up`` are per-expert ``(I, H)`` matrices, ``down`` ``(H, I)``; ``shared`` is
    ``(gate, up, down)`` of the shared expert or None; ``shared_expert_gate`` is ``(1, H)`` or None.
    """
    x64 = as64(x)
    weights, experts = router(x64, router_weight, top_k, renormalize, hint, tol)
    g = [as64(m) for m in gate]
    u = [as64(m) for m in up]
    d = [as64(m) for m in down]
    out = np.zeros_like(x64)
    for t in range(x64.shape[0]):
        for j in range(top_k):
            e = experts[t, j]
            out[t] += weights[t, j] * swiglu(x64[t:t + 1], g[e], u[e], d[e])[0]
    if shared is not None:
        sg, su, sd = (as64(m) for m in shared)
        y = swiglu(x64, sg, su, sd)
        if shared_expert_gate is not None:
            y = y / (1.0 + np.exp(-(x64 @ as64(shared_expert_gate).reshape(1, -1).T)))
        out += y
    return out


# ---- comparing rio_rt results with the reference ---------------------------------------------

FLOAT_DTYPES = ["float32", "float16", "bfloat16"]

# Largest |rio - reference| allowed, relative to max |reference|, per compute dtype. bf16 keeps
# 8 mantissa bits and rounds activations between GEMMs (as transformers does); f16 weights
# compute in f32 and round only the output (11 bits); f32 differs only by summation order.
RTOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.5e-2}
# Probability gap under which two experts count as tied (routing in that dtype may pick either).
TIE = {"float32": 1e-5, "float16": 5e-3, "bfloat16": 3e-2}


def make(a: np.ndarray, dtype: str, kind: str = "numpy"):
    """``a`` rounded to ``dtype``, as a numpy array or a torch tensor."""
    a32 = np.asarray(a, dtype=np.float32)
    if kind == "torch":
        import torch

        return torch.from_numpy(a32).to(getattr(torch, dtype))
    if dtype == "bfloat16":
        import ml_dtypes

        return a32.astype(ml_dtypes.bfloat16)
    return a32.astype(dtype)


def assert_close(actual, reference: np.ndarray, dtype: str, what: str = "result"):
    got = as64(actual)
    assert got.shape == reference.shape, f"{what}: shape {got.shape} != {reference.shape}"
    scale = max(float(np.abs(reference).max(initial=0.0)), 1e-30)
    err = float(np.abs(got - reference).max(initial=0.0))
    assert err <= RTOL[dtype] * scale, f"{what}: max error {err:.3g} > {RTOL[dtype]} x {scale:.3g} ({dtype})"
