"""rio_rt.Model on Qwen3-MoE (`qwen3_moe`) checkpoints against transformers fp32.

Tiny random checkpoints are built here with transformers' `Qwen3MoeForCausalLM` and saved with
`save_pretrained`; every weight is random (q/k/input/post/final norms included, so a `1+w` vs
`w` mistake shows). Configs cover `norm_topk_prob` true and false, dense MLP layers chosen by
`mlp_only_layers` and by `decoder_sparse_step`, head_dim != hidden_size / heads, GQA and tied
embeddings. Tolerance: max abs difference of fp32 logits <= 1e-4 (logits are O(1-10)).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import rio_rt  # noqa: E402
from tiny_models import QWEN3MOE_CONFIG, randomise  # noqa: E402
from tiny_models import transformers_greedy  # noqa: E402

TOL = 1e-4
VOCAB = QWEN3MOE_CONFIG["vocab_size"]

# Each entry overrides tiny_models.QWEN3MOE_CONFIG, its norm_topk_prob included.
CONFIGS = {
    # every layer sparse, top-k probabilities renormalised
    "renormalised": dict(norm_topk_prob=True),
    # raw top-k softmax probabilities; layer 2 dense by mlp_only_layers
    "raw_topk": dict(norm_topk_prob=False, mlp_only_layers=[2]),
    # layers 1 and 3 sparse by decoder_sparse_step; tied embeddings
    "sparse_step": dict(norm_topk_prob=True, decoder_sparse_step=2, tie_word_embeddings=True),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{name: (folder, transformers fp32 model, rio_rt model)}."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    out = {}
    for seed, (name, extra) in enumerate(CONFIGS.items()):
        torch.manual_seed(seed)
        hf = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**QWEN3MOE_CONFIG, **extra})).float().eval()
        randomise(hf, 10 + seed)
        folder = tmp_path_factory.mktemp(f"qwen3moe_{name}")
        hf.save_pretrained(folder)
        out[name] = (folder, hf, rio_rt.Model.from_pretrained(folder))
    return out


def _ids(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=n).astype(np.int64)


def _hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids)[None]).logits[0].numpy()


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def test_the_configs_exercise_what_they_claim(checkpoints):
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeMLP, Qwen3MoeSparseMoeBlock
    kinds = {name: ["dense" if isinstance(layer.mlp, Qwen3MoeMLP) else "sparse"
                    for layer in hf.model.layers] for name, (_, hf, _) in checkpoints.items()}
    assert kinds["renormalised"] == ["sparse"] * 4
    assert kinds["raw_topk"] == ["sparse", "sparse", "dense", "sparse"]
    assert kinds["sparse_step"] == ["dense", "sparse", "dense", "sparse"]
    assert isinstance(checkpoints["raw_topk"][1].model.layers[0].mlp, Qwen3MoeSparseMoeBlock)
    for _, _, model in checkpoints.values():
        assert model.model_type == "qwen3_moe" and model.eos_token_ids == [7]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_prefill_logits_match_transformers(checkpoints, name):
    _, hf, model = checkpoints[name]
    ids = _ids(40, seed=1)
    want = _hf_logits(hf, ids)
    got = model.forward(ids)
    assert isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype == np.float32
    assert np.abs(want).max() > 1.0  # not a comparison of near-zero numbers
    assert _max_diff(got, want) <= TOL


@pytest.mark.parametrize("name", ["renormalised", "raw_topk"])
def test_cached_decode_steps_match_transformers_cache(checkpoints, name):
    """Prefill, then single-token steps with both caches: transformers' own decode path."""
    _, hf, model = checkpoints[name]
    ids = _ids(24, seed=2)
    cache = model.new_cache()
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(ids[:16])[None], use_cache=True)
        past = out.past_key_values
        assert _max_diff(model.forward(ids[:16], cache=cache), out.logits[0].numpy()) <= TOL
        for t in range(16, len(ids)):
            out = hf(input_ids=torch.from_numpy(ids[t:t + 1])[None], past_key_values=past, use_cache=True)
            past = out.past_key_values
            step = model.forward(ids[t:t + 1], cache=cache)
            assert step.shape == (1, VOCAB)
            assert _max_diff(step, out.logits[0].numpy()) <= TOL, f"decode step at position {t}"
    assert cache.position == len(ids)


def test_greedy_decoding_gives_transformers_tokens(checkpoints):
    _, hf, model = checkpoints["raw_topk"]
    prompt = _ids(8, seed=3)
    want = transformers_greedy(hf, prompt.tolist(), 32)
    cache = model.new_cache()
    logits = model.forward(prompt, cache=cache, logits_to_keep=1)
    got = []
    for _ in range(32):
        got.append(int(logits[-1].argmax()))
        logits = model.forward(np.array(got[-1:]), cache=cache)
    assert got == want


def test_input_embeds_forward_equals_token_forward(checkpoints):
    _, hf, model = checkpoints["renormalised"]
    ids = _ids(10, seed=4)
    emb = hf.get_input_embeddings().weight.detach()[torch.from_numpy(ids)].numpy()
    np.testing.assert_array_equal(model.forward(input_embeds=emb), model.forward(ids))


def test_a_cache_of_other_sizes_is_refused(checkpoints, tmp_path):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**QWEN3MOE_CONFIG, "head_dim": 16})).save_pretrained(tmp_path / "other")
    foreign = rio_rt.Model.from_pretrained(tmp_path / "other").new_cache()
    _, _, model = checkpoints["renormalised"]
    with pytest.raises(ValueError, match="cache"):
        model.forward(_ids(3, seed=5), cache=foreign)


def test_config_errors_name_the_field(checkpoints, tmp_path):
    folder, _, _ = checkpoints["renormalised"]
    config = json.loads((folder / "config.json").read_text())
    cases = [
        ({"model_type": "llama"}, "model_type.*llama"),
        ({"num_experts_per_tok": 99}, "num_experts_per_tok"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"mlp_only_layers": [1], "intermediate_size": None}, "intermediate_size"),
    ]
    for i, (edit, pattern) in enumerate(cases):
        broken = tmp_path / f"broken{i}"
        broken.mkdir()
        (broken / "config.json").write_text(json.dumps({**config, **edit}))
        with pytest.raises(rio_rt.ConfigError, match=pattern):
            rio_rt.Model.from_pretrained(broken)
