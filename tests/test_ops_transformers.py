"""rio_rt.ops.moe_forward against the MoE blocks of transformers itself (Qwen3.5-MoE, Qwen3-MoE).

Tiny random configs, weights copied straight from the torch modules (fused layout, and split
per expert). fp32 must agree to float rounding; bf16 runs the same dtype flow as transformers
(router logits and activations rounded to bf16), so it agrees to a few bf16 ulps of the output.
"""
from __future__ import annotations

import numpy as np
import pytest

from rio_rt import ops

torch = pytest.importorskip("torch")
qwen35 = pytest.importorskip("transformers.models.qwen3_5_moe.modeling_qwen3_5_moe")
qwen3 = pytest.importorskip("transformers.models.qwen3_moe.modeling_qwen3_moe")
from transformers import Qwen3MoeConfig  # noqa: E402
from transformers.models.qwen3_5_moe.configuration_qwen3_5_moe import Qwen3_5MoeTextConfig  # noqa: E402

H, I, I_S, E, K, T = 64, 32, 48, 16, 4, 24
# max |rio - transformers| / max |transformers|
FP32_TOL, BF16_TOL = 1e-5, 2e-2


def randomise(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[-1]))
    return module


def relative_error(got, want, tokens=slice(None)):
    got, want = got[tokens].float(), want[tokens].float()
    return float((got - want).abs().max() / want.abs().max())


def same_routing_tokens(block, x, top_k):
    """Tokens both route to the same experts. Elsewhere the k-th and (k+1)-th probabilities must tie
    in the model dtype: torch.topk breaks ties arbitrarily, rio_rt to the lower index."""
    with torch.no_grad():
        logits, _, want = block.gate(x)
    _, got = ops.moe_router(x, block.gate.weight, top_k)
    probs = torch.softmax(logits.float(), dim=-1).sort(dim=-1, descending=True).values
    same = [set(a.tolist()) == set(b.tolist()) for a, b in zip(want, got)]
    for t, ok in enumerate(same):
        assert ok or probs[t, top_k - 1] == probs[t, top_k], f"token {t}: routing differs without a tie"
    assert sum(same) >= len(same) - 2
    return torch.tensor(same)


def qwen35_kwargs(block, layout):
    kw = {
        "top_k": K,
        "shared_gate_proj": block.shared_expert.gate_proj.weight,
        "shared_up_proj": block.shared_expert.up_proj.weight,
        "shared_down_proj": block.shared_expert.down_proj.weight,
        "shared_expert_gate": block.shared_expert_gate.weight,
    }
    return kw | experts_kwargs(block.experts, layout)


def experts_kwargs(experts, layout):
    gu, down = experts.gate_up_proj, experts.down_proj
    if layout == "fused":
        return {"gate_up_proj": gu, "down_proj": down}
    i = gu.shape[1] // 2
    return {"gate_proj": [g[:i] for g in gu], "up_proj": [g[i:] for g in gu], "down_proj": list(down)}


@pytest.fixture(scope="module")
def qwen35_block():
    cfg = Qwen3_5MoeTextConfig(hidden_size=H, moe_intermediate_size=I, shared_expert_intermediate_size=I_S,
                               num_experts=E, num_experts_per_tok=K)
    return randomise(qwen35.Qwen3_5MoeSparseMoeBlock(cfg).eval(), seed=0)


@pytest.mark.parametrize("layout", ["fused", "per_expert"])
@pytest.mark.parametrize("dtype,tol", [("float32", FP32_TOL), ("bfloat16", BF16_TOL)])
def test_qwen35_sparse_moe_block(qwen35_block, layout, dtype, tol):
    block = qwen35_block.to(getattr(torch, dtype))
    x = torch.randn(T, H, generator=torch.Generator().manual_seed(1)).to(block.gate.weight.dtype)
    with torch.no_grad():
        want = block(x[None])[0]
    got = ops.moe_forward(x, block.gate.weight, **qwen35_kwargs(block, layout))
    assert isinstance(got, torch.Tensor) and got.dtype == x.dtype and got.shape == x.shape
    assert relative_error(got, want, same_routing_tokens(block, x, K)) <= tol


@pytest.mark.parametrize("norm_topk_prob", [True, False])
@pytest.mark.parametrize("dtype,tol", [("float32", FP32_TOL), ("bfloat16", BF16_TOL)])
def test_qwen3_sparse_moe_block(norm_topk_prob, dtype, tol):
    cfg = Qwen3MoeConfig(hidden_size=H, moe_intermediate_size=I, num_experts=E, num_experts_per_tok=K,
                         norm_topk_prob=norm_topk_prob)
    block = randomise(qwen3.Qwen3MoeSparseMoeBlock(cfg).eval(), seed=2).to(getattr(torch, dtype))
    x = torch.randn(T, H, generator=torch.Generator().manual_seed(3)).to(block.gate.weight.dtype)
    with torch.no_grad():
        want = block(x[None])[0]
    got = ops.moe_forward(x, block.gate.weight, top_k=K, renormalize=norm_topk_prob, **experts_kwargs(block.experts, "fused"))
    assert relative_error(got, want, same_routing_tokens(block, x, K)) <= tol


def test_qwen35_router_matches_transformers(qwen35_block):
    block = qwen35_block.float()
    x = torch.randn(T, H, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, want_w, want_e = block.gate(x)
    got_w, got_e = ops.moe_router(x, block.gate.weight, K)
    assert torch.equal(got_e.long(), want_e)
    torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-7)
