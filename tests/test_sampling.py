"""Sampling through Model.generate against a numpy float64 implementation of transformers'
logits processors (RepetitionPenalty, Temperature, TopK, TopP, MinP) plus the OpenAI/vLLM
presence and frequency penalties, applied to the model's own logits (``Model.forward``).

With ``logprobs=V`` the result's ``top_logprobs`` at each step is the whole filtered distribution
the token was drawn from; it must equal the reference within 1e-6 in probability. Sampled
frequencies are checked with a chi-square test at a fixed seed.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import rio_rt  # noqa: E402

PROMPT = [11, 42, 7, 300, 21, 42, 42]


@pytest.fixture(scope="module")
def model(tiny_qwen35):
    return rio_rt.Model.from_pretrained(tiny_qwen35[0])


def reference(logits, p: rio_rt.SamplingParams, prompt, output):
    """{token id: probability} of transformers' processors in float64 (vLLM's penalties)."""
    x = logits.astype(np.float64).copy()
    seen = np.unique(np.array(list(prompt) + list(output), dtype=np.int64))
    x[seen] = np.where(x[seen] < 0, x[seen] * p.repetition_penalty, x[seen] / p.repetition_penalty)
    ids, counts = np.unique(np.array(output, dtype=np.int64), return_counts=True)
    x[ids] -= p.presence_penalty + p.frequency_penalty * counts
    x = x / p.temperature
    if 0 < p.top_k < x.size:
        kth = np.sort(x)[-p.top_k]
        x = np.where(x < kth, -np.inf, x)

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    if p.top_p < 1.0:
        probs = softmax(x)
        order = np.argsort(probs, kind="stable")  # ascending, as TopPLogitsWarper
        remove = np.cumsum(probs[order]) <= 1 - p.top_p
        remove[-1] = False
        x[order[remove]] = -np.inf
    if p.min_p > 0.0:
        probs = softmax(x)
        x = np.where(probs < p.min_p * probs.max(), -np.inf, x)
    probs = softmax(x)
    return {int(i): float(probs[i]) for i in np.flatnonzero(probs > 0)}


SETTINGS = [
    rio_rt.SamplingParams(temperature=1.0),
    rio_rt.SamplingParams(temperature=0.7, top_k=20),
    rio_rt.SamplingParams(temperature=1.3, top_p=0.8),
    rio_rt.SamplingParams(temperature=0.9, min_p=0.05),
    rio_rt.SamplingParams(temperature=0.6, top_k=50, top_p=0.9, min_p=0.02),
    rio_rt.SamplingParams(temperature=1.0, repetition_penalty=1.5),
    rio_rt.SamplingParams(temperature=0.8, repetition_penalty=0.8, presence_penalty=0.7, frequency_penalty=0.4, top_p=0.95),
]


@pytest.mark.parametrize("params", SETTINGS, ids=lambda p: "-".join(
    f"{k}={v}" for k, v in vars(p).items() if v != getattr(rio_rt.SamplingParams(), k)))
def test_filtered_distribution_matches_float64_reference(model, params):
    n_steps = 4
    out = model.generate(PROMPT, params, max_new_tokens=n_steps, ignore_eos=True, seed=5, logprobs=model.vocab_size)
    assert len(out.top_logprobs) == n_steps
    for step in range(n_steps):
        history = out.token_ids[:step]
        logits = model.forward(np.array(PROMPT + history))[-1]
        want = reference(logits, params, PROMPT, history)
        got = {t: np.exp(lp) for t, lp in out.top_logprobs[step]}
        assert sorted(got) == sorted(want), f"step {step}: kept sets differ"
        np.testing.assert_allclose([got[t] for t in want], list(want.values()), atol=1e-6, rtol=0)
        # The chosen token was drawn from this distribution and its logprob is of it.
        assert out.token_ids[step] in want
        assert abs(np.exp(out.logprobs[step]) - want[out.token_ids[step]]) < 1e-6
        probs = [np.exp(lp) for _, lp in out.top_logprobs[step]]
        assert probs == sorted(probs, reverse=True)


def test_sampled_frequencies_follow_the_distribution(model):
    params = rio_rt.SamplingParams(temperature=1.5, top_k=6, max_new_tokens=1, seed=2024)
    n = 1500
    logits = model.forward(np.array(PROMPT[:1]))[-1]
    want = reference(logits, params, PROMPT[:1], [])
    # One batch of n copies: copy i samples with seed 2024 + i, independent streams.
    results = model.generate([PROMPT[:1]] * n, params)
    tokens = np.array([r.token_ids[0] for r in results])
    assert set(tokens.tolist()) <= set(want)
    observed = np.array([(tokens == t).sum() for t in want])
    expected = n * np.array(list(want.values()))
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert expected.min() > 5
    assert chi2 < 20.5, f"chi-square {chi2:.1f} with {len(want) - 1} degrees of freedom (99.9% quantile 20.5)"


def test_greedy_logprobs_are_the_log_softmax_of_penalised_logits(model):
    params = rio_rt.SamplingParams(temperature=0.0, repetition_penalty=1.8, max_new_tokens=3, ignore_eos=True)
    out = model.generate(PROMPT, params)
    for step in range(3):
        history = out.token_ids[:step]
        x = model.forward(np.array(PROMPT + history))[-1].astype(np.float64)
        seen = np.unique(PROMPT + history)
        x[seen] = np.where(x[seen] < 0, x[seen] * 1.8, x[seen] / 1.8)
        assert out.token_ids[step] == int(np.argmax(x))
        log_softmax = x - x.max() - np.log(np.exp(x - x.max()).sum())
        assert abs(out.logprobs[step] - log_softmax[out.token_ids[step]]) < 1e-5


def test_sampling_params_validation_and_defaults():
    p = rio_rt.SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.max_new_tokens, p.is_greedy) == (0.0, 0, 1.0, 0.0, 64, True)
    assert rio_rt.SamplingParams(stop_token_ids=[3, 4], stop_strings=["a"]).stop_token_ids == (3, 4)
    for kwargs, field in [
        (dict(temperature=-0.5), "temperature"), (dict(top_p=0.0), "top_p"), (dict(min_p=-0.1), "min_p"),
        (dict(repetition_penalty=-1.0), "repetition_penalty"), (dict(frequency_penalty=float("nan")), "frequency_penalty"),
        (dict(max_new_tokens=0), "max_new_tokens"), (dict(stop_strings=[""]), "stop_strings"),
        (dict(stop_token_ids=[-1]), "stop_token_ids"), (dict(top_k=-2), "top_k"),
    ]:
        with pytest.raises(ValueError, match=field):
            rio_rt.SamplingParams(**kwargs)
    with pytest.raises(TypeError, match="max_new_tokens"):
        rio_rt.SamplingParams(max_new_tokens=2.5)
