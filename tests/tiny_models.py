"""Tiny random transformers checkpoints shared by the generation and reasoning tests.

Same recipe as tests/test_model_qwen35.py (spec section 10): every weight random, norms included,
saved with ``save_pretrained``. The conftest fixtures ``tiny_qwen35`` and ``tiny_qwen3moe`` build
one of each per session and return ``(folder, transformers fp32 model in eval mode)``.
"""
from __future__ import annotations

from pathlib import Path

QWEN35_TEXT_CONFIG = dict(
    vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=64, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32,
    linear_value_head_dim=32, linear_conv_kernel_dim=4, num_experts=16, num_experts_per_tok=4,
    moe_intermediate_size=48, shared_expert_intermediate_size=64, rms_norm_eps=1e-6, eos_token_id=5,
    rope_parameters=dict(rope_type="default", rope_theta=1e7, partial_rotary_factor=0.25,
                         mrope_section=[3, 3, 2], mrope_interleaved=True),
)

QWEN3MOE_CONFIG = dict(
    vocab_size=512, hidden_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=32, num_experts=8, num_experts_per_tok=3, moe_intermediate_size=40, intermediate_size=112,
    rms_norm_eps=1e-6, eos_token_id=7, rope_parameters=dict(rope_type="default", rope_theta=1e6),
    norm_topk_prob=True,
)


def randomise(model, seed: int) -> None:
    """Every parameter random: norms around their initial value (clearly not it), matrices at
    half the unit-variance scale, which keeps the tiny models well conditioned."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "A_log" in name:
                p.copy_(torch.rand(p.shape, generator=gen) * 2.0 - 1.0)
            elif p.ndim == 1:
                centre = 1.0 if name.endswith("linear_attn.norm.weight") or "qwen3_moe" in type(model).__module__ else 0.0
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + centre)
            else:
                scale = 1.0 if name.endswith(("embed_tokens.weight", "lm_head.weight")) else 0.5
                p.copy_(torch.randn(p.shape, generator=gen) * scale / p.shape[-1] ** 0.5)


def build_qwen35(folder: Path, seed: int = 2, **overrides):
    """A text-only Qwen3.5-MoE checkpoint in ``folder``; returns the transformers fp32 model."""
    import torch
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig
    torch.manual_seed(seed)
    model = Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(**{**QWEN35_TEXT_CONFIG, **overrides})).float().eval()
    randomise(model, seed)
    model.save_pretrained(folder)
    return model


def build_qwen3moe(folder: Path, seed: int = 3, **overrides):
    """A Qwen3-MoE checkpoint in ``folder``; returns the transformers fp32 model."""
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**QWEN3MOE_CONFIG, **overrides})).float().eval()
    randomise(model, seed)
    model.save_pretrained(folder)
    return model


def transformers_greedy(hf, prompt, n: int, with_logits: bool = False):
    """transformers' greedy decoding of exactly ``n`` tokens after ``prompt`` (no EOS stop): the
    new token ids, and with ``with_logits`` also their raw logits ``[n, V]`` in float64.

    transformers falls back to the model's generation_config for a None ``eos_token_id``, so the
    model's own is cleared for the call (session fixtures are shared: it is restored after)."""
    import torch
    saved = hf.generation_config.eos_token_id
    hf.generation_config.eos_token_id = None
    try:
        with torch.no_grad():
            out = hf.generate(torch.tensor([list(prompt)]), do_sample=False, max_new_tokens=n, pad_token_id=0,
                              return_dict_in_generate=True, output_logits=with_logits)
    finally:
        hf.generation_config.eos_token_id = saved
    tokens = out.sequences[0, len(prompt):].tolist()
    assert len(tokens) == n
    if not with_logits:
        return tokens
    return tokens, torch.stack([step[0] for step in out.logits]).double()
