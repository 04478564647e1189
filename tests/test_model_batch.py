"""Batched forward steps (``Model._native.forward_batch``) equal separate forwards.

Sequences of different prompt lengths are prefilled in one batched call (projections and MoE
over the rows of all sequences, attention and Gated DeltaNet per sequence with its own cache),
then decoded together one token per sequence for several steps. Each sequence's logits must equal
those of the same sequence run alone with its own cache: within 1e-5 in float32 (the kernels
may block rows differently when more rows share a call) and within one bf16 ulp of the logit
magnitude in bf16.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import rio_rt  # noqa: E402

LENGTHS = [9, 1, 70, 33]  # 70 crosses the 64-token GDN chunk
STEPS = 4


def _batched_vs_alone(model: rio_rt.Model, vocab: int):
    rng = np.random.default_rng(7)
    prompts = [rng.integers(0, vocab, size=n).astype(np.int64) for n in LENGTHS]
    nexts = [rng.integers(0, vocab, size=STEPS).astype(np.int64) for _ in LENGTHS]
    native = model._native
    caches = [model.new_cache() for _ in LENGTHS]
    batched = [native.forward_batch(prompts, caches)]
    for s in range(STEPS):
        batched.append(native.forward_batch([n[s:s + 1] for n in nexts], caches))
    assert [c.position for c in caches] == [n + STEPS for n in LENGTHS]
    alone = []
    for prompt, nxt in zip(prompts, nexts):
        cache = model.new_cache()
        rows = [model.forward(prompt, cache=cache, logits_to_keep=1)[0]]
        rows += [model.forward(nxt[s:s + 1], cache=cache)[0] for s in range(STEPS)]
        alone.append(rows)
    return batched, alone


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch", ["qwen35", "qwen3moe"])
def test_batched_steps_equal_separate_forwards(tiny_qwen35, tiny_qwen3moe, arch, dtype):
    folder, hf = tiny_qwen35 if arch == "qwen35" else tiny_qwen3moe
    model = rio_rt.Model.from_pretrained(folder, dtype=dtype)
    batched, alone = _batched_vs_alone(model, hf.config.vocab_size)
    for step, logits in enumerate(batched):
        assert logits.shape == (len(LENGTHS), hf.config.vocab_size)
        for b in range(len(LENGTHS)):
            want = alone[b][step]
            tol = 1e-5 * max(1.0, np.abs(want).max()) if dtype == "float32" else 2.0 ** (np.floor(np.log2(np.abs(want).max())) - 7)
            assert np.abs(logits[b] - want).max() <= tol, f"step {step}, sequence {b}"


def test_bad_batches_raise(tiny_qwen35):
    folder, _ = tiny_qwen35
    model = rio_rt.Model.from_pretrained(folder)
    native = model._native
    cache = model.new_cache()
    with pytest.raises(ValueError, match="caches"):
        native.forward_batch([np.array([1, 2])], [])
    with pytest.raises(ValueError, match="twice"):
        native.forward_batch([np.array([1]), np.array([2])], [cache, cache])
    with pytest.raises(ValueError, match=r"ids\[1\]"):
        native.forward_batch([np.array([1]), np.array([], dtype=np.int64)], [model.new_cache(), model.new_cache()])
    with pytest.raises(ValueError, match="vocabulary"):
        native.forward_batch([np.array([10**6])], [model.new_cache()])


@pytest.mark.parametrize("arch", ["qwen35", "qwen3moe"])
def test_2d_forward_of_last_positions_is_one_batched_run(tiny_qwen35, tiny_qwen3moe, arch):
    """``Model.forward`` with (B, T) ids or (B, T, H) embeddings and only the last position kept
    runs the rows as one batch; it equals row-by-row forwards within the batched tolerance."""
    folder, hf = tiny_qwen35 if arch == "qwen35" else tiny_qwen3moe
    model = rio_rt.Model.from_pretrained(folder)
    vocab, hidden = hf.config.vocab_size, hf.config.hidden_size
    rng = np.random.default_rng(11)
    ids = rng.integers(0, vocab, size=(3, 12)).astype(np.int64)
    got = model.forward(ids, logits_to_keep=1)
    assert got.shape == (3, 1, vocab)
    embeds = rng.standard_normal((3, 1, hidden)).astype(np.float32)
    got_embeds = model.forward(input_embeds=embeds)
    assert got_embeds.shape == (3, 1, vocab)
    for b in range(3):
        for have, want in ((got[b], model.forward(ids[b])[-1:]), (got_embeds[b], model.forward(input_embeds=embeds[b]))):
            assert np.abs(have - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), f"sequence {b}"
