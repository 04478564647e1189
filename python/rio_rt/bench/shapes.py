"""MoE layer shapes and what one forward pass of them reads and computes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPE_BYTES = {"bf16": 2, "f16": 2, "f32": 4}


@dataclass(frozen=True)
class MoeShape:
    """One sparse MoE block: E experts, top-k routing, hidden H, expert width I, shared width I_s (0: none)."""

    name: str
    experts: int
    top_k: int
    hidden: int
    intermediate: int
    shared_intermediate: int

    def __post_init__(self) -> None:
        for field in ("experts", "top_k", "hidden", "intermediate"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field}: must be positive, got {getattr(self, field)}")
        if self.shared_intermediate < 0:
            raise ValueError(f"shared_intermediate: must be >= 0, got {self.shared_intermediate}")
        if self.top_k > self.experts:
            raise ValueError(f"top_k: must be <= experts ({self.experts}), got {self.top_k}")

    def describe(self) -> str:
        shared = f" shared {self.shared_intermediate}" if self.shared_intermediate else " no shared"
        return f"{self.name}: E {self.experts} top-{self.top_k} H {self.hidden} I {self.intermediate}{shared}"

    def expert_params(self) -> int:
        """gate + up + down of one routed expert."""
        return 3 * self.hidden * self.intermediate

    def always_read_params(self) -> int:
        """Weights every call reads whatever the routing: the router, the shared expert and its gate."""
        shared = 3 * self.hidden * self.shared_intermediate + self.hidden if self.shared_intermediate else 0
        return self.experts * self.hidden + shared

    def weight_bytes(self, unique_experts: float, dtype: str) -> float:
        """Bytes of weights a call touching `unique_experts` distinct experts reads at least once."""
        return (unique_experts * self.expert_params() + self.always_read_params()) * DTYPE_BYTES[dtype]

    def flops(self, tokens: int) -> float:
        """Multiply-adds x2 of the experts, shared expert, router and shared gate for `tokens` tokens."""
        per_token = self.top_k * self.expert_params() + self.experts * self.hidden
        if self.shared_intermediate:
            per_token += 3 * self.hidden * self.shared_intermediate + self.hidden
        return 2.0 * tokens * per_token


# Spec section 6 (Qwen3.5-MoE configs).
NAMED_SHAPES = {
    "qwen3.5-35b": MoeShape("qwen3.5-35b", experts=256, top_k=8, hidden=2048, intermediate=512, shared_intermediate=512),
    "qwen3.5-122b": MoeShape("qwen3.5-122b", experts=256, top_k=8, hidden=3072, intermediate=1024, shared_intermediate=1024),
    "qwen3.5-397b": MoeShape("qwen3.5-397b", experts=512, top_k=10, hidden=4096, intermediate=1024, shared_intermediate=1024),
}


def unique_experts(topk_index: np.ndarray) -> int:
    """Distinct experts among a batch's `[T, k]` routing choices."""
    return int(np.unique(topk_index).size)
