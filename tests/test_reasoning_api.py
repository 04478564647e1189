"""The Python face of latent reasoning: parameter validation, special-token resolution, traces
(to_dict / to_pandas / format_table / plot_trace) and errors that reach the caller."""
from __future__ import annotations

import math

import pytest

import rio_rt
from rio_rt.reasoning import MATH_SYMBOLS, resolve_reasoning

PROMPT = [3, 17, 29, 101, 44]


@pytest.fixture(scope="module")
def model(tiny_qwen35):
    return rio_rt.Model.from_pretrained(tiny_qwen35[0])


@pytest.mark.parametrize("kwargs, field", [
    (dict(window=0), "window"), (dict(alpha0=1.2), "alpha0"), (dict(beta0=-0.5), "beta0"),
    (dict(alpha0=math.nan), "alpha0"), (dict(max_switch_count=0), "max_switch_count"),
    (dict(soft_form="sparse"), "soft_form"), (dict(think_token_id=-1), "think_token_id"),
    (dict(termination_max_tokens=0), "termination_max_tokens"),
])
def test_swireasoning_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        rio_rt.SwiReasoning(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(top_k=0), "top_k"), (dict(cold_stop_entropy=-0.1), "cold_stop_entropy"),
    (dict(cold_stop_steps=0), "cold_stop_steps"), (dict(top_p=0.0), "top_p"), (dict(min_p=1.5), "min_p"),
    (dict(temperature=-1.0), "temperature"), (dict(gumbel_tau=0.5, dirichlet_alpha=1.0), "gumbel_tau"),
])
def test_soft_thinking_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        rio_rt.SoftThinking(**kwargs)


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="window"):
        rio_rt.SwiReasoning(window=2.5)
    with pytest.raises(TypeError, match="math_token_ids"):
        rio_rt.SwiReasoning(math_token_ids="abc")


def test_missing_special_tokens_without_a_tokenizer(model):
    with pytest.raises(ValueError, match="think_token_id"):
        model.generate(PROMPT, max_new_tokens=4, reasoning=rio_rt.SwiReasoning())
    with pytest.raises(ValueError, match="end_think_token_id"):
        model.generate(PROMPT, max_new_tokens=4, reasoning=rio_rt.SoftThinking())
    with pytest.raises(ValueError, match="termination_token_ids"):
        resolve_reasoning(rio_rt.SwiReasoning(think_token_id=1, end_think_token_id=2, max_switch_count=2), model)


def test_out_of_vocabulary_tokens(model):
    with pytest.raises(ValueError, match="end_think_token_id"):
        model.generate(PROMPT, max_new_tokens=4, reasoning=rio_rt.SwiReasoning(think_token_id=1, end_think_token_id=10**6))
    with pytest.raises(ValueError, match="math_token_ids"):
        model.generate(PROMPT, max_new_tokens=4,
                       reasoning=rio_rt.SwiReasoning(think_token_id=1, end_think_token_id=2, math_token_ids=[5000]))


def test_not_a_reasoning_object(model):
    with pytest.raises(TypeError, match="reasoning"):
        model.generate(PROMPT, max_new_tokens=4, reasoning="swi")


class FakeTokenizer:
    """token_to_id / encode over a tiny vocabulary: one id per known string, one per character."""

    def __init__(self):
        self.vocab = {"<think>": 10, "</think>": 11, "\\n": 12}

    def token_to_id(self, s):
        return self.vocab.get(s)

    def encode(self, text, add_special_tokens=False):
        if text in self.vocab:
            return [self.vocab[text]]
        return [100 + ord(c) % 200 for c in text]


class Holder:
    tokenizer = FakeTokenizer()
    vocab_size = 1000


def test_special_tokens_resolve_from_the_tokenizer():
    r = resolve_reasoning(rio_rt.SwiReasoning(max_switch_count=2), Holder())
    assert (r.think_token_id, r.end_think_token_id) == (10, 11)
    assert r.convergence_token_ids == (11,)
    assert r.termination_token_ids == tuple(FakeTokenizer().encode("</think>\n\nThe final answer is"))
    assert r.step0_token_id == 100 + ord("\n")
    assert r.soft_form == "pruned"
    assert set(r.math_token_ids) == {t for s in MATH_SYMBOLS for t in FakeTokenizer().encode(s)}
    faithful = resolve_reasoning(rio_rt.SwiReasoning(faithful=True), Holder())
    assert faithful.step0_token_id == 12 and faithful.soft_form == "full"
    assert resolve_reasoning(rio_rt.SoftThinking(), Holder()).end_think_token_id == 11
    assert resolve_reasoning(rio_rt.SwiReasoning(math_token_ids=()), Holder()).math_token_ids == ()


def test_unknown_special_token_in_the_tokenizer():
    class NoThink(Holder):
        tokenizer = FakeTokenizer()
    NoThink.tokenizer.vocab.pop("<think>")
    with pytest.raises(ValueError, match="think_token_id.*<think>"):
        resolve_reasoning(rio_rt.SwiReasoning(), NoThink())


def test_trace_helpers(model):
    pd = pytest.importorskip("pandas")
    r = rio_rt.SwiReasoning(window=3, think_token_id=10, end_think_token_id=11, soft_form="full")
    res = model.generate(PROMPT, max_new_tokens=20, reasoning=r, trace=True, ignore_eos=True)
    t = res.trace
    assert isinstance(t, rio_rt.Trace) and len(t) == 20
    d = t.to_dict()
    assert set(d) == {"step", "mode", "entropy", "ref_entropy", "switched", "injected", "token_id", "token_prob",
                      "fed_soft"}
    assert rio_rt.Trace.from_dict(d) == t
    df = t.to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df["token_id"]) == res.token_ids
    table = t.format_table(max_rows=5)
    lines = table.splitlines()
    assert len(lines) == 7 and "entropy" in lines[0] and lines[-1] == "... 15 more steps"
    assert all(p == pytest.approx(math.exp(lp), rel=1e-4) for p, lp, inj in zip(t.token_prob, res.logprobs, t.injected)
               if not inj)
    with pytest.raises(ValueError, match="missing"):
        rio_rt.Trace.from_dict({"step": [1]})


def test_plot_trace(model, tmp_path):
    pytest.importorskip("matplotlib")
    r = rio_rt.SwiReasoning(window=3, think_token_id=10, end_think_token_id=11)
    res = model.generate(PROMPT, max_new_tokens=20, reasoning=r, trace=True, ignore_eos=True)
    path = tmp_path / "trace.png"
    fig = rio_rt.plot_trace(res, path=str(path))
    assert path.stat().st_size > 1000
    ax = fig.axes[0]
    assert len(ax.lines) >= 2  # entropy, reference (+ switch markers)
    with pytest.raises(TypeError, match="plot_trace"):
        rio_rt.plot_trace(42)


def test_no_trace_unless_asked(model):
    r = rio_rt.SwiReasoning(think_token_id=10, end_think_token_id=11)
    assert model.generate(PROMPT, max_new_tokens=3, reasoning=r).trace is None


def test_a_raising_callback_reaches_the_caller_and_leaves_the_model_usable(model):
    r = rio_rt.SwiReasoning(window=3, think_token_id=10, end_think_token_id=11, soft_form="full")

    def boom(event):
        if event.step == 3:
            raise RuntimeError("research callback failed")

    with pytest.raises(RuntimeError, match="research callback failed"):
        model.generate([PROMPT, PROMPT[:3]], max_new_tokens=10, reasoning=r, trace=True, callback=boom)
    again = model.generate([PROMPT, PROMPT[:3]], max_new_tokens=10, reasoning=r, trace=True)
    solo = model.generate(PROMPT, max_new_tokens=10, reasoning=r, trace=True)
    assert again[0].token_ids == solo.token_ids


def test_bad_callback_answer(model):
    r = rio_rt.SwiReasoning(think_token_id=10, end_think_token_id=11)
    with pytest.raises(ValueError, match="callback"):
        model.generate(PROMPT, max_new_tokens=5, reasoning=r, callback=lambda e: "jump")


def test_special_tokens_from_a_checkpoint_tokenizer(tmp_path_factory):
    """A checkpoint with tokenizer.json: nothing to pass, ids come from its tokenizer."""
    from rio_rt.bench.checkpoint import ensure_checkpoint
    folder = ensure_checkpoint(tmp_path_factory.mktemp("bench_tiny"), "tiny", 0)
    m = rio_rt.Model.from_pretrained(folder)
    tok = m.tokenizer
    r = resolve_reasoning(rio_rt.SwiReasoning(max_switch_count=1), m)
    assert (r.think_token_id, r.end_think_token_id) == (tok.token_to_id("<think>"), tok.token_to_id("</think>"))
    assert r.termination_token_ids == tuple(tok.encode("</think>\n\nThe final answer is", add_special_tokens=False))
    assert r.step0_token_id == tok.encode("\n", add_special_tokens=False)[-1]
    for reasoning in (rio_rt.SwiReasoning(max_switch_count=1, window=2), rio_rt.SoftThinking()):
        res = m.generate([1, 2, 3], max_new_tokens=6, reasoning=reasoning, trace=True, ignore_eos=True)
        assert len(res.token_ids) == len(res.trace) == 6
