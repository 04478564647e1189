"""Soft Thinking in rio_rt's decode loop against the transformers reference
(tests/reference_reasoning.py) on the tiny checkpoints: oracles T1-T5 of
shared/spec/swireasoning.md section 4, greedy answers, alone and in batches.
"""
from __future__ import annotations

import numpy as np
import pytest

import rio_rt

torch = pytest.importorskip("torch")
import reference_reasoning as ref  # noqa: E402
from reasoning_fixtures import END_THINK, PROMPTS, models, one_thread  # noqa: E402, F401 (fixtures)
from tiny_models import transformers_greedy  # noqa: E402


def horizon(hf) -> int:
    """Steps over which runs are compared. A concept token every step makes the tiny Qwen3.5
    decode chaotic: transformers alone turns a 1e-7 relative perturbation of the fed embeddings
    into 1e-4 nats by step ~13 and 4e-2 by step 19; rio_rt and transformers start ~1e-5 apart in
    the logits (fp32 rounding), so their entropies stay within 1e-4 for ~6 steps there (at
    T = 0.6). Qwen3-MoE stays within 1e-5 for 30 steps."""
    return 6 if hf.config.model_type.startswith("qwen3_5") else 30


def soft(**kw):
    base = dict(end_think_token_id=END_THINK, cold_stop_entropy=0.0, temperature=1.0, top_p=0.9, min_p=0.01)
    return rio_rt.SoftThinking(**{**base, **kw})


def ref_kwargs(s: rio_rt.SoftThinking):
    return dict(end_think_id=END_THINK, top_k=s.top_k, filter_top_k=s.filter_top_k, top_p=s.top_p, min_p=s.min_p,
                temperature=s.temperature, cold_stop_entropy=s.cold_stop_entropy, cold_stop_steps=s.cold_stop_steps,
                start_explicit=s.start_explicit)


def assert_same_run(res, want, label=""):
    t = res.trace
    assert res.token_ids == want["tokens"], label
    assert t.mode == want["mode"] and t.switched == want["switched"] and t.injected == want["injected"], label
    assert t.fed_soft == want["fed_soft"], label
    np.testing.assert_allclose(t.entropy, want["entropy"], atol=1e-4, err_msg=label)
    assert res.finish_reason == want["finish"], label


@pytest.mark.parametrize("cfg", [dict(), dict(top_k=4, filter_top_k=0, top_p=0.8), dict(temperature=0.6, min_p=0.001)])
def test_matches_reference_alone(models, cfg):
    model, hf = models
    s = soft(**cfg)
    res = model.generate(PROMPTS[0], max_new_tokens=horizon(hf), reasoning=s, trace=True)
    want = ref.soft_thinking(hf, PROMPTS[0], max_new_tokens=horizon(hf), eos_ids=[hf.config.eos_token_id], **ref_kwargs(s))
    assert_same_run(res, want, str(cfg))
    assert any(res.trace.fed_soft), "the run must feed concept tokens"


def test_batch_equals_reference_per_prompt(models):
    model, hf = models
    s = soft(cold_stop_entropy=3.0, cold_stop_steps=4)
    results = model.generate(list(PROMPTS), max_new_tokens=horizon(hf), reasoning=s, trace=True)
    for prompt, res in zip(PROMPTS, results):
        want = ref.soft_thinking(hf, prompt, max_new_tokens=horizon(hf), eos_ids=[hf.config.eos_token_id], **ref_kwargs(s))
        assert_same_run(res, want, str(prompt))


@pytest.mark.parametrize("cfg", [dict(top_k=1), dict(temperature=0.0)])
def test_t1_one_entry_concepts_are_greedy_cot(models, cfg):
    model, hf = models
    res = model.generate(PROMPTS[1], max_new_tokens=24, reasoning=soft(**cfg), trace=True, ignore_eos=True)
    assert res.token_ids == transformers_greedy(hf, PROMPTS[1], 24)
    assert not any(res.trace.fed_soft)


def test_t2_recorded_token_is_the_argmax_in_thinking(models):
    model, hf = models
    s = soft()
    res = model.generate(PROMPTS[2], max_new_tokens=horizon(hf), reasoning=s, trace=True, ignore_eos=True)
    want = ref.soft_thinking(hf, PROMPTS[2], max_new_tokens=horizon(hf), eos_ids=[], **ref_kwargs(s))
    for step, concept in enumerate(want["concept"]):
        if concept is not None:
            ids, w = concept
            assert abs(sum(w) - 1) < 1e-9 and all(a >= b for a, b in zip(w, w[1:])) and len(ids) <= s.top_k
            assert res.trace.token_id[step] == ids[0]
            assert abs(res.trace.token_prob[step] - w[0]) < 1e-4


def test_t3_cold_stop_fires_at_the_lth_low_entropy_step(models):
    model, hf = models
    L = 5
    # τ above ln V: every step is "low entropy", so the 5th step (index 4) becomes </think>.
    s = soft(cold_stop_entropy=10.0, cold_stop_steps=L)
    res = model.generate(PROMPTS[0], max_new_tokens=12, reasoning=s, trace=True, ignore_eos=True)
    t = res.trace
    assert res.token_ids[L - 1] == END_THINK and t.injected[L - 1] and t.switched[L - 1] == "to_explicit"
    assert not any(t.injected[:L - 1]) and t.mode[:L - 1] == ["latent"] * (L - 1)
    # T4: explicit and hard from then on; answers are greedy tokens of the model.
    assert t.mode[L - 1:] == ["explicit"] * (len(t) - L + 1) and not any(t.fed_soft[L - 1:])
    want = ref.soft_thinking(hf, PROMPTS[0], max_new_tokens=12, eos_ids=[], **ref_kwargs(s))
    assert res.token_ids == want["tokens"]
    # τ = 0: never.
    off = model.generate(PROMPTS[0], max_new_tokens=12, reasoning=soft(cold_stop_steps=1), trace=True, ignore_eos=True)
    assert not any(off.trace.injected)


def test_t5_thinking_is_deterministic_and_uses_no_randomness(models):
    model, _ = models
    s = soft(cold_stop_entropy=10.0, cold_stop_steps=6)
    a = model.generate(PROMPTS[0], max_new_tokens=16, reasoning=s, trace=True, temperature=1.0, seed=1, ignore_eos=True)
    b = model.generate(PROMPTS[0], max_new_tokens=16, reasoning=s, trace=True, temperature=1.0, seed=2, ignore_eos=True)
    assert a.token_ids[:6] == b.token_ids[:6]
    assert a.token_ids != b.token_ids, "answers sample with the request's seed"


def test_explicit_start_is_plain_decoding(models):
    model, hf = models
    res = model.generate(PROMPTS[1], max_new_tokens=16, reasoning=soft(start_explicit=True), trace=True, ignore_eos=True)
    assert res.token_ids == transformers_greedy(hf, PROMPTS[1], 16) and set(res.trace.mode) == {"explicit"}


def test_noise_is_seeded(models):
    model, _ = models
    s = soft(gumbel_tau=0.5, noise_seed=4)
    a = model.generate(PROMPTS[0], max_new_tokens=10, reasoning=s, trace=True, ignore_eos=True)
    b = model.generate(PROMPTS[0], max_new_tokens=10, reasoning=s, trace=True, ignore_eos=True)
    c = model.generate(PROMPTS[0], max_new_tokens=10, reasoning=soft(gumbel_tau=0.5, noise_seed=5), trace=True,
                       ignore_eos=True)
    assert a.token_ids == b.token_ids
    assert a.trace.token_prob != c.trace.token_prob
