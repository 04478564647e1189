"""The same MoE layer in torch: transformers' own Qwen3.5-MoE block over the benchmark's weights.

The block is built on the meta device and its parameters replaced by torch views of the numpy
arrays rio reads, so both sides compute with the very same bytes. Two expert implementations of
transformers 5.x run side by side: ``grouped_mm`` (``integrations.moe.grouped_mm_experts_forward``,
its default) and ``eager`` (the per-expert loop: one-hot mask, index, two linears, ``index_add_``).
"""
from __future__ import annotations

import time

import numpy as np

from rio_rt.bench.weights import LayerWeights

IMPLEMENTATIONS = {"torch_grouped_mm": "grouped_mm", "torch_eager": "eager"}


def available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers.models.qwen3_5_moe  # noqa: F401
    except ImportError:
        return False
    return True


def as_tensor(a: np.ndarray, dtype: str):
    """A torch view of `a` (no copy); bf16 arrays hold the bits as uint16."""
    import torch

    t = torch.from_numpy(a)
    return t.view(torch.bfloat16) if dtype == "bf16" else t


class TorchMoe:
    """transformers' `Qwen3_5MoeSparseMoeBlock` with the given expert implementation."""

    def __init__(self, weights: LayerWeights, top_k: int, implementation: str):
        import torch
        from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe as qwen
        from transformers.models.qwen3_5_moe.configuration_qwen3_5_moe import Qwen3_5MoeTextConfig

        e, h = weights.router.shape
        inter = weights.down.shape[2]
        shared = weights.shared_gate.shape[0] if weights.has_shared else inter
        config = Qwen3_5MoeTextConfig(
            hidden_size=h,
            num_experts=e,
            num_experts_per_tok=top_k,
            moe_intermediate_size=inter,
            shared_expert_intermediate_size=shared,
        )
        config._experts_implementation = implementation
        with torch.device("meta"):
            block = qwen.Qwen3_5MoeSparseMoeBlock(config)

        def param(a: np.ndarray):
            return torch.nn.Parameter(as_tensor(a, weights.dtype), requires_grad=False)

        block.gate.weight = param(weights.router)
        block.experts.gate_up_proj = param(weights.gate_up)
        block.experts.down_proj = param(weights.down)
        if weights.has_shared:
            block.shared_expert.gate_proj.weight = param(weights.shared_gate)
            block.shared_expert.up_proj.weight = param(weights.shared_up)
            block.shared_expert.down_proj.weight = param(weights.shared_down)
            block.shared_expert_gate.weight = param(weights.shared_expert_gate)
        self.block = block.eval()
        self.dtype = weights.dtype
        self.has_shared = weights.has_shared

    def __call__(self, x: np.ndarray):
        """`[T, H]` in the weights' dtype -> torch tensor `[T, H]`."""
        import torch

        xt = as_tensor(x, self.dtype)
        with torch.inference_mode():
            if self.has_shared:
                return self.block(xt[None])[0]
            # The block's forward minus its shared expert (transformers has no switch for it).
            _, weights, experts = self.block.gate(xt)
            return self.block.experts(xt, experts, weights)

    def time_call(self, x: np.ndarray, flusher=None) -> float:
        """Seconds one call on `x` takes; `flusher.flush()` (untimed) first when given."""
        if flusher is not None:
            flusher.flush()
        start = time.perf_counter()
        self(x)
        return time.perf_counter() - start


def gemm_peak(n: int, seconds: float) -> float:
    """torch.matmul bf16 rate in GFLOP/s on an n x n x n product: best run within `seconds`."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=gen).to(torch.bfloat16)
    b = torch.rand(n, n, generator=gen).to(torch.bfloat16)
    torch.matmul(a, b)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() >= deadline:
            return 2.0 * n**3 / best / 1e9
