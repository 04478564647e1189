"""Provenance on checkpoints written by transformers itself (tiny Qwen3.5-MoE, spec section 10):
``save_pretrained`` of the text-only model writes per-expert matrices under ``model.``; the other
parent is written from the in-memory state dict (fused experts) under ``model.language_model.``;
the candidate is their blend saved in bf16 by transformers. Coefficients are checked against numpy float64 lstsq on the same values
(tolerance 1e-6) and against the blend's (1e-3).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from checkpoints import write_checkpoint  # noqa: E402
from rio_rt import provenance  # noqa: E402

TEXT_CONFIG = dict(
    vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
    linear_value_head_dim=16, linear_conv_kernel_dim=4, num_experts=8, num_experts_per_tok=2,
    moe_intermediate_size=32, shared_expert_intermediate_size=32,
)


def random_model(seed: int):
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    torch.manual_seed(seed)
    model = Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(**TEXT_CONFIG)).float()
    with torch.no_grad():
        for p in model.parameters():  # norms too: HF initialises them to one value
            p.copy_(torch.randn(p.shape) * 0.05)
    return model


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    a, b = random_model(1), random_model(2)
    sa, sb = a.state_dict(), b.state_dict()
    blend = random_model(3)
    blend.load_state_dict({k: 0.6 * sa[k] + 0.4 * sb[k] for k in sa})
    root = tmp_path_factory.mktemp("hf")
    a.save_pretrained(root / "a")
    write_checkpoint(root / "b", {k.removeprefix("model."): v.numpy() for k, v in sb.items()})
    blend.to(torch.bfloat16).save_pretrained(root / "c")
    cand = {k: v.float().numpy() for k, v in blend.state_dict().items()}
    return root, sa, sb, cand


def test_transformers_layout_is_what_the_reader_expects(lineage):
    root = lineage[0]
    from safetensors import safe_open

    with safe_open(root / "a" / "model.safetensors", "np") as f:
        keys = list(f.keys())
    assert any(".mlp.experts.0.gate_proj.weight" in k for k in keys), "per-expert layout on save"
    assert all(k.startswith(("model.", "lm_head.")) for k in keys)
    assert not any(".experts.gate_up_proj" in k for k in keys)


def test_blend_of_transformers_checkpoints(lineage):
    root, sa, sb, cand = lineage
    r = provenance.fit(root / "c", [root / "a", root / "b"])
    assert r.not_compared == []
    assert {t.name for t in r.tensors} == {k.removeprefix("model.") for k in sa}
    assert r.verdict.kind == "blend", r.verdict.text
    np.testing.assert_allclose(r.verdict.coefficients, [0.6, 0.4], atol=1e-3)
    for t in r.tensors:
        key = t.name if t.name.startswith("lm_head") else "model." + t.name
        y = cand[key].astype(np.float64).ravel()
        x = np.stack([sa[key].numpy().astype(np.float64).ravel(), sb[key].numpy().astype(np.float64).ravel()], 1)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        np.testing.assert_allclose(t.coefficients, coef, atol=1e-6, err_msg=t.name)
        assert t.rel_residual == pytest.approx(np.linalg.norm(y - x @ coef) / np.linalg.norm(y), abs=1e-6)
