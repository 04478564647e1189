"""Model.generate / Model.stream against transformers on the tiny checkpoints (fp32), and the
loop's contract: batches equal solo runs, stop conditions, finish reasons, streaming, callbacks,
argument errors.

References: transformers ``generate(do_sample=False)`` for greedy tokens (token-identical) and its
``output_logits`` for logprobs (log_softmax, within 1e-4).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import rio_rt  # noqa: E402
from tiny_models import transformers_greedy  # noqa: E402

N_NEW = 40
PROMPTS = [[11, 42, 7, 300, 21], [99], [3, 1, 4, 1, 5, 9, 2, 6, 53, 58, 97, 93, 23]]


@pytest.fixture(scope="module")
def qwen35(tiny_qwen35):
    folder, hf = tiny_qwen35
    return rio_rt.Model.from_pretrained(folder), hf, folder


@pytest.fixture(scope="module")
def qwen3moe(tiny_qwen3moe):
    folder, hf = tiny_qwen3moe
    return rio_rt.Model.from_pretrained(folder), hf, folder


def hf_greedy(hf, prompt, n):
    return transformers_greedy(hf, prompt, n, with_logits=True)


@pytest.mark.parametrize("which", ["qwen35", "qwen3moe"])
def test_greedy_matches_transformers_with_logprobs(which, request):
    model, hf, _ = request.getfixturevalue(which)
    for prompt in PROMPTS[:2]:
        want, logits = hf_greedy(hf, prompt, N_NEW)
        got = model.generate(prompt, max_new_tokens=N_NEW, temperature=0.0, ignore_eos=True, logprobs=2)
        assert got.token_ids == want
        assert got.finish_reason == "length"
        ref = torch.log_softmax(logits, dim=-1)[torch.arange(N_NEW), torch.tensor(want)].numpy()
        np.testing.assert_allclose(got.logprobs, ref, atol=1e-4, rtol=0)
        # Greedy alternatives: the log-softmax's two largest, the chosen token first.
        assert [alts[0][0] for alts in got.top_logprobs] == want
        top2 = torch.log_softmax(logits, dim=-1).topk(2, dim=-1)
        np.testing.assert_allclose([[lp for _, lp in alts] for alts in got.top_logprobs], top2.values.numpy(), atol=1e-4)


@pytest.mark.parametrize("which", ["qwen35", "qwen3moe"])
def test_batch_of_different_lengths_equals_solo_runs(which, request):
    model, _, _ = request.getfixturevalue(which)
    batch = model.generate(PROMPTS, max_new_tokens=N_NEW, ignore_eos=True, temperature=0.0)
    assert isinstance(batch, list) and len(batch) == 3
    for prompt, result in zip(PROMPTS, batch):
        solo = model.generate(prompt, max_new_tokens=N_NEW, ignore_eos=True, temperature=0.0)
        assert result.token_ids == solo.token_ids
        np.testing.assert_allclose(result.logprobs, solo.logprobs, atol=1e-5)
    # Sampling too: prompt i samples with seed + i, whatever else runs in the batch.
    batch = model.generate(PROMPTS, max_new_tokens=20, ignore_eos=True, temperature=1.0, seed=100)
    for i, prompt in enumerate(PROMPTS):
        assert model.generate(prompt, max_new_tokens=20, ignore_eos=True, temperature=1.0, seed=100 + i).token_ids == batch[i].token_ids


def test_numpy_prompts(qwen35):
    model, _, _ = qwen35
    want = model.generate(PROMPTS[0], max_new_tokens=8, ignore_eos=True, temperature=0.0).token_ids
    assert model.generate(np.array(PROMPTS[0], dtype=np.int32), max_new_tokens=8, ignore_eos=True, temperature=0.0).token_ids == want
    batch = model.generate(np.array([PROMPTS[0], PROMPTS[0]]), max_new_tokens=8, ignore_eos=True, temperature=0.0)
    assert [r.token_ids for r in batch] == [want, want]


def test_seeds(qwen35):
    model, _, _ = qwen35
    run = lambda seed: model.generate(PROMPTS[0], max_new_tokens=24, ignore_eos=True, temperature=1.2, seed=seed).token_ids  # noqa: E731
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_stop_token_eos_and_length(qwen35, tmp_path):
    model, _, folder = qwen35
    free = model.generate(PROMPTS[0], max_new_tokens=N_NEW, ignore_eos=True, temperature=0.0).token_ids
    stop = free[5]
    until = free[:free.index(stop) + 1]
    got = model.generate(PROMPTS[0], max_new_tokens=N_NEW, ignore_eos=True, temperature=0.0, stop=[stop])
    assert (got.token_ids, got.finish_reason) == (until, "stop_token")
    got = model.generate(PROMPTS[0], max_new_tokens=3, ignore_eos=True, temperature=0.0)
    assert (got.token_ids, got.finish_reason) == (free[:3], "length")

    # A copy of the checkpoint whose generation_config.json names that token as EOS and asks
    # for sampling defaults.
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [stop, 999], "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9}))
    other = rio_rt.Model.from_pretrained(copy)
    assert other.default_sampling_params() == rio_rt.SamplingParams(temperature=0.7, top_k=20, top_p=0.9)
    got = other.generate(PROMPTS[0], max_new_tokens=N_NEW, temperature=0.0)
    assert (got.token_ids, got.finish_reason) == (until, "eos")
    assert other.generate(PROMPTS[0], max_new_tokens=N_NEW, temperature=0.0, ignore_eos=True).token_ids == free
    # Unspecified values come from the file: this samples (top-k 20), the greedy default does not.
    sampled = other.generate(PROMPTS[0], max_new_tokens=N_NEW, ignore_eos=True, seed=3)
    assert sampled.token_ids != free
    assert model.default_sampling_params() == rio_rt.SamplingParams()


class LetterTokenizer:
    """Token t decodes to one letter; enough for stop strings and text deltas."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(ord("a") + t % 26) for t in ids)

    def encode(self, text, add_special_tokens=True):
        return [ord(c) - ord("a") for c in text]


@pytest.fixture
def lettered(qwen35, monkeypatch):
    model, _, _ = qwen35
    monkeypatch.setattr(rio_rt.Model, "tokenizer", property(lambda self: LetterTokenizer()))
    return model


def test_stop_strings_text_and_streaming(lettered):
    model = lettered
    free = model.generate(PROMPTS[0], max_new_tokens=N_NEW, ignore_eos=True, temperature=0.0)
    text = LetterTokenizer().decode(free.token_ids)
    assert free.text == text
    stop = text[10:13]
    at = text.index(stop)
    events = []
    got = model.generate(PROMPTS[0], max_new_tokens=N_NEW, ignore_eos=True, temperature=0.0, stop=[stop, "##"],
                         stream=events.append)
    assert got.finish_reason == "stop_string"
    assert got.text == text[:at]
    assert got.token_ids == free.token_ids[:at + len(stop)]
    assert "".join(e.text for e in events) == got.text
    assert [e.token_id for e in events] == got.token_ids
    assert [e.step for e in events] == list(range(len(got.token_ids)))
    assert [e.finish_reason for e in events] == [None] * (len(events) - 1) + ["stop_string"]
    # A str prompt goes through the tokenizer.
    assert model.generate("lcj", max_new_tokens=4, temperature=0.0).token_ids == \
        model.generate([11, 2, 9], max_new_tokens=4, temperature=0.0).token_ids


def test_stream_iterator_equals_the_result_and_closes_on_break(qwen35):
    model, _, _ = qwen35
    want = model.generate(PROMPTS[:2], max_new_tokens=12, ignore_eos=True, temperature=0.0)
    events = list(model.stream(PROMPTS[:2], max_new_tokens=12, ignore_eos=True, temperature=0.0))
    for i in range(2):
        mine = [e for e in events if e.index == i]
        assert [e.token_id for e in mine] == want[i].token_ids
        np.testing.assert_allclose([e.logprob for e in mine], want[i].logprobs, atol=1e-6)
        assert mine[-1].finish_reason == "length"
        assert all(e.mode == "explicit" for e in mine)

    stream = model.stream(PROMPTS[0], max_new_tokens=10_000, ignore_eos=True, temperature=0.0)
    first = [next(stream).token_id for _ in range(3)]
    stream.close()  # ends the generation after the current step; the worker thread joins
    assert first == want[0].token_ids[:3]
    import threading
    assert not any(t.name == "rio_rt-stream" for t in threading.enumerate())


def test_callback_stop_and_errors(qwen35):
    model, _, _ = qwen35
    free = model.generate(PROMPTS[:2], max_new_tokens=20, ignore_eos=True, temperature=0.0)
    got = model.generate(PROMPTS[:2], max_new_tokens=20, ignore_eos=True, temperature=0.0,
                         callback=lambda e: "stop" if (e.index, e.step) == (1, 4) else None)
    assert got[1].finish_reason == "callback"
    assert got[1].token_ids == free[1].token_ids[:5]
    assert got[0].token_ids == free[0].token_ids

    class Boom(Exception):
        pass

    def explode(event):
        if event.step == 2:
            raise Boom("from the callback")

    with pytest.raises(Boom, match="from the callback"):
        model.generate(PROMPTS[0], max_new_tokens=20, temperature=0.0, callback=explode)
    with pytest.raises(Boom):
        list(model.stream(PROMPTS[0], max_new_tokens=20, temperature=0.0, callback=explode))
    with pytest.raises(ValueError, match="callback"):
        model.generate(PROMPTS[0], max_new_tokens=5, temperature=0.0, callback=lambda e: "halt")
    with pytest.raises(ValueError, match="force_switch|reasoning"):
        model.generate(PROMPTS[0], max_new_tokens=5, temperature=0.0, callback=lambda e: "switch")


@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(min_p=2.0), "min_p"),
    (dict(top_k=-1), "top_k"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(presence_penalty=float("inf")), "presence_penalty"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(logprobs=-1), "logprobs"),
    (dict(seed=-5), "seed"),
    (dict(stop=[1000]), "stop"),
    (dict(stop=["x"]), "stop"),
])
def test_bad_arguments_raise_value_error_naming_the_field(qwen35, kwargs, field):
    model, _, _ = qwen35
    with pytest.raises(ValueError, match=field):
        model.generate(PROMPTS[0], **kwargs)


def test_bad_prompts(qwen35):
    model, _, _ = qwen35
    with pytest.raises(ValueError, match="prompt: is empty"):
        model.generate([])
    with pytest.raises(ValueError, match=r"prompt\[1\]: token id 1000"):
        model.generate([[1, 2], [1000]])
    with pytest.raises(ValueError, match="prompt: token id -1"):
        model.generate([1, -1])
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate("no tokenizer here")
    with pytest.raises(TypeError, match="sampling"):
        model.generate([1], sampling={"temperature": 1.0})
    with pytest.raises(TypeError, match="temperature"):
        rio_rt.SamplingParams(temperature="hot")
