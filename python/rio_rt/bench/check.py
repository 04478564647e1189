"""Is rio's MoE output right? Compare it with an independent result for the same input.

References: a float64 numpy evaluation of the block (always available) and torch (transformers'
own block, when installed). Tokens whose k-th and (k+1)-th router logits are within the weight
dtype's rounding of each other are left out: either expert is a correct choice there, and two
correct implementations may pick differently. What is compared must agree per token.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rio_rt.bench.weights import LayerWeights, to_float32

# Largest relative L2 error of one token's output row, per weight dtype: bf16 rounds the SwiGLU
# activations and (in torch) every intermediate to 8 bits, about 0.4% each.
TOLERANCE = {"bf16": 2e-2, "f16": 4e-3, "f32": 1e-4}
# Relative spacing within which two router logits may swap or tie after rounding to the dtype.
LOGIT_RESOLUTION = {"bf16": 2.0**-7, "f16": 2.0**-10, "f32": 2.0**-20}


class CheckFailed(RuntimeError):
    """rio's output disagrees with a reference beyond the stated tolerance."""


@dataclass(frozen=True)
class CheckResult:
    system: str
    reference: str
    tokens: int
    compared: int
    max_rel_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        # At least half the tokens must be comparable, so near-ties cannot excuse everything.
        return self.compared * 2 >= self.tokens and self.max_rel_error <= self.tolerance

    def summary(self) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"check {self.system} vs {self.reference}: max relative error {self.max_rel_error:.2e} "
            f"(tolerance {self.tolerance:.0e}) over {self.compared}/{self.tokens} tokens "
            f"({self.tokens - self.compared} router near-ties left out): {verdict}"
        )

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "reference": self.reference,
            "tokens": self.tokens,
            "compared": self.compared,
            "max_rel_error": self.max_rel_error,
            "tolerance": self.tolerance,
            "ok": self.ok,
        }


def _as64(a: np.ndarray, dtype: str) -> np.ndarray:
    return to_float32(np.asarray(a), dtype).astype(np.float64)


def router_logits(x: np.ndarray, weights: LayerWeights) -> np.ndarray:
    """`x [T, H] · router [E, H]ᵀ` in float64."""
    return _as64(x, weights.dtype) @ _as64(weights.router, weights.dtype).T


def near_ties(logits: np.ndarray, top_k: int, dtype: str) -> np.ndarray:
    """`[T]` bools: the k-th and (k+1)-th largest logits are within the dtype's resolution."""
    if top_k >= logits.shape[1]:
        return np.zeros(logits.shape[0], dtype=bool)
    part = -np.sort(-logits, axis=1)
    kth, next_ = part[:, top_k - 1], part[:, top_k]
    scale = np.maximum(np.abs(kth), np.abs(next_))
    return kth - next_ <= LOGIT_RESOLUTION[dtype] * scale + 1e-12


def _silu(v: np.ndarray) -> np.ndarray:
    return v / (1.0 + np.exp(-v))


def reference_forward(x: np.ndarray, weights: LayerWeights, top_k: int) -> np.ndarray:
    """The Qwen3.5-MoE sparse block (spec section 5) in float64: softmax over all experts, top-k,
    renormalise, SwiGLU experts, weighted sum, plus the sigmoid-gated shared expert."""
    dt = weights.dtype
    xf = _as64(x, dt)
    logits = xf @ _as64(weights.router, dt).T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    chosen = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    picked = np.take_along_axis(probs, chosen, axis=1)
    picked /= picked.sum(axis=1, keepdims=True)
    out = np.zeros_like(xf)
    inter = weights.down.shape[2]
    for e in np.unique(chosen):
        rows, slots = np.nonzero(chosen == e)
        gate_up = _as64(weights.gate_up[e], dt)
        h = xf[rows]
        act = _silu(h @ gate_up[:inter].T) * (h @ gate_up[inter:].T)
        out[rows] += picked[rows, slots, None] * (act @ _as64(weights.down[e], dt).T)
    if weights.has_shared:
        act = _silu(xf @ _as64(weights.shared_gate, dt).T) * (xf @ _as64(weights.shared_up, dt).T)
        gate = 1.0 / (1.0 + np.exp(-(xf @ _as64(weights.shared_expert_gate, dt).T)))
        out += gate * (act @ _as64(weights.shared_down, dt).T)
    return out


def compare(got: np.ndarray, want: np.ndarray, skip: np.ndarray, tolerance: float, system: str, reference: str) -> CheckResult:
    """Per-token relative L2 error of `got` against `want` ([T, H] each) over the tokens not in `skip`."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"got: expected shape {want.shape} (the reference's), got {got.shape}")
    keep = ~np.asarray(skip, dtype=bool)
    diff = np.linalg.norm(got[keep] - want[keep], axis=1)
    norm = np.maximum(np.linalg.norm(want[keep], axis=1), np.finfo(np.float64).tiny)
    rel = diff / norm
    # NaN anywhere in what is compared is a mismatch, not a pass.
    worst = float(np.max(rel, initial=0.0)) if np.all(np.isfinite(rel)) else float("inf")
    return CheckResult(system, reference, int(got.shape[0]), int(keep.sum()), worst, tolerance)
