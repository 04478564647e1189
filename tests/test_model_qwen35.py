"""rio_rt.Model (Qwen3.5-MoE, f32) against transformers fp32 on tiny random checkpoints.

The checkpoints are built here with transformers (spec section 10): 4 layers [GDN, GDN, GDN,
full], every weight random (norms included, so a `1+w` vs `w` mistake shows), saved with
`save_pretrained` (per-expert layout, `model.language_model.` prefix), once as the multimodal
`Qwen3_5MoeForConditionalGeneration` and once as the text-only `Qwen3_5MoeForCausalLM`.
Tolerance: max abs difference of logits <= 1e-4 (logits are O(1-10)).
"""
from __future__ import annotations

import copy
import json
import re
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import rio_rt  # noqa: E402
from tiny_models import QWEN35_TEXT_CONFIG as TEXT_CONFIG  # noqa: E402
from tiny_models import randomise  # noqa: E402
from tiny_models import transformers_greedy  # noqa: E402

TOL = 1e-4
PREFILL = 70  # crosses the 64-token GDN chunk boundary of transformers' chunked path

VISION_CONFIG = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=128)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """{kind: (folder, transformers model in fp32 eval mode)} for "multimodal" and "text"."""
    from transformers import (Qwen3_5MoeConfig, Qwen3_5MoeForCausalLM,
                              Qwen3_5MoeForConditionalGeneration, Qwen3_5MoeTextConfig)
    torch.manual_seed(0)
    out = {}
    mm = Qwen3_5MoeForConditionalGeneration(Qwen3_5MoeConfig(text_config=TEXT_CONFIG, vision_config=VISION_CONFIG)).float().eval()
    randomise(mm, 1)
    d = tmp_path_factory.mktemp("qwen35_multimodal")
    mm.save_pretrained(d)
    out["multimodal"] = (d, mm)
    text = Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(**TEXT_CONFIG)).float().eval()
    randomise(text, 2)
    d = tmp_path_factory.mktemp("qwen35_text")
    text.save_pretrained(d)
    out["text"] = (d, text)
    out["fused"] = (_fused_copy(out["text"][0], tmp_path_factory.mktemp("qwen35_fused")), text)
    # A bf16 checkpoint computed in float32 (dtype="float32": the kernels widen the bf16 weights),
    # against transformers fp32 on the same weights.
    d = tmp_path_factory.mktemp("qwen35_bf16")
    copy.deepcopy(text).to(torch.bfloat16).save_pretrained(d)
    out["bf16"] = (d, Qwen3_5MoeForCausalLM.from_pretrained(d, dtype=torch.float32).eval())
    return out


def _fused_copy(src, dst):
    """The official bf16-release layout (spec 5): experts.gate_up_proj [E, 2I, H] (gate rows
    first) and experts.down_proj [E, H, I] instead of transformers' per-expert matrices, with the
    text-only key prefix `model.` instead of `model.language_model.`."""
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(src / "model.safetensors"))
    per_expert = re.compile(r"(.*\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight")
    blocks = {}
    out = {}
    for key, value in tensors.items():
        m = per_expert.fullmatch(key)
        if m:
            blocks.setdefault(m[1], {})[(int(m[2]), m[3])] = value
        else:
            out[key.replace("model.language_model.", "model.", 1)] = value
    assert blocks, "transformers saved no per-expert matrices"
    for prefix, mats in blocks.items():
        n = 1 + max(e for e, _ in mats)
        prefix = prefix.replace("model.language_model.", "model.", 1)
        out[f"{prefix}.gate_up_proj"] = np.stack([np.concatenate([mats[e, "gate"], mats[e, "up"]]) for e in range(n)])
        out[f"{prefix}.down_proj"] = np.stack([mats[e, "down"] for e in range(n)])
    assert not any(k.startswith("model.language_model.") for k in out)
    save_file(out, str(dst / "model.safetensors"))
    shutil.copy(src / "config.json", dst / "config.json")
    return dst


@pytest.fixture(scope="session")
def loaded(checkpoints):
    return {k: rio_rt.Model.from_pretrained(d, dtype="float32") for k, (d, _) in checkpoints.items()}


def _ids(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, TEXT_CONFIG["vocab_size"], size=n).astype(np.int64)


def _hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids)[None]).logits[0].float().numpy()


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.mark.parametrize("kind", ["multimodal", "text", "fused", "bf16"])
def test_prefill_logits_match_transformers(checkpoints, loaded, kind):
    _, hf = checkpoints[kind]
    ids = _ids(PREFILL, seed=1)
    want = _hf_logits(hf, ids)
    got = loaded[kind].forward(ids)
    assert isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype == np.float32
    assert np.abs(want).max() > 1.0  # the comparison is not between near-zero numbers
    assert _max_diff(got, want) <= TOL


def test_prefill_is_as_close_to_float64_transformers_as_its_fp32_is(checkpoints, loaded):
    """The fp32 rounding of this tiny random model is ~2e-5; rio_rt stays within 1e-4 of the
    float64 result too, so the fp32 agreement is not two implementations sharing an error."""
    from transformers import Qwen3_5MoeForCausalLM
    folder, _ = checkpoints["text"]
    exact = Qwen3_5MoeForCausalLM.from_pretrained(folder, dtype=torch.float64, experts_implementation="eager").eval()
    ids = _ids(PREFILL, seed=8)
    with torch.no_grad():
        want = exact(input_ids=torch.from_numpy(ids)[None]).logits[0].numpy()
    assert _max_diff(loaded["text"].forward(ids), want) <= TOL


def test_cached_decode_steps_match_transformers(checkpoints, loaded):
    _, hf = checkpoints["text"]
    model = loaded["text"]
    ids = _ids(PREFILL + 8, seed=2)
    want = _hf_logits(hf, ids)  # causal: position t's logits depend only on ids[:t+1]
    cache = model.new_cache()
    prefill = model.forward(ids[:PREFILL], cache=cache)
    assert _max_diff(prefill, want[:PREFILL]) <= TOL
    for t in range(PREFILL, len(ids)):
        step = model.forward(ids[t:t + 1], cache=cache)
        assert step.shape == (1, TEXT_CONFIG["vocab_size"])
        assert _max_diff(step[0], want[t]) <= TOL, f"decode step at position {t}"
    assert cache.position == len(ids)
    # A multi-token continuation on top of the cache.
    cache = model.new_cache()
    model.forward(ids[:40], cache=cache)
    assert _max_diff(model.forward(ids[40:], cache=cache), want[40:]) <= TOL


def test_decode_with_transformers_cache_matches_step_by_step(checkpoints, loaded):
    """transformers' own single-token decode path (recurrent GDN, growing KV cache)."""
    _, hf = checkpoints["multimodal"]
    model = loaded["multimodal"]
    ids = _ids(12, seed=3)
    cache = model.new_cache()
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(ids[:9])[None], use_cache=True)
        past = out.past_key_values
        assert _max_diff(model.forward(ids[:9], cache=cache), out.logits[0].numpy()) <= TOL
        for t in range(9, len(ids)):
            out = hf(input_ids=torch.from_numpy(ids[t:t + 1])[None], past_key_values=past, use_cache=True)
            past = out.past_key_values
            assert _max_diff(model.forward(ids[t:t + 1], cache=cache), out.logits[0].numpy()) <= TOL


@pytest.mark.parametrize("kind", ["multimodal", "text"])
def test_greedy_decoding_with_the_cache_gives_transformers_tokens(checkpoints, loaded, kind):
    _, hf = checkpoints[kind]
    model = loaded[kind]
    prompt = _ids(12, seed=11)
    want = transformers_greedy(hf, prompt.tolist(), 32)
    cache = model.new_cache()
    logits = model.forward(prompt, cache=cache, logits_to_keep=1)
    got = []
    for _ in range(32):
        got.append(int(logits[-1].argmax()))
        logits = model.forward(np.array(got[-1:]), cache=cache)
    assert got == want


def test_input_embeds_forward_equals_token_forward(checkpoints, loaded):
    model = loaded["text"]
    _, hf = checkpoints["text"]
    ids = _ids(20, seed=4)
    emb = hf.get_input_embeddings().weight.detach()[torch.from_numpy(ids)].numpy()
    np.testing.assert_array_equal(model.forward(input_embeds=emb), model.forward(ids))
    # A soft embedding (probability mix of rows) as a cached decode step, against transformers.
    probs = np.random.default_rng(5).dirichlet(np.ones(TEXT_CONFIG["vocab_size"])).astype(np.float32)
    soft = probs @ hf.get_input_embeddings().weight.detach().numpy()
    cache = model.new_cache()
    model.forward(ids, cache=cache)
    got = model.forward(input_embeds=soft[None], cache=cache)
    with torch.no_grad():
        full = torch.cat([torch.from_numpy(emb), torch.from_numpy(soft)[None]])[None]
        want = hf(inputs_embeds=full).logits[0, -1].numpy()
    assert _max_diff(got[0], want) <= TOL


def test_torch_in_torch_out_and_batches(checkpoints, loaded):
    model = loaded["text"]
    ids = np.stack([_ids(10, seed=6), _ids(10, seed=7)])
    batch = model.forward(torch.from_numpy(ids))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 10, TEXT_CONFIG["vocab_size"])
    for b in range(2):
        np.testing.assert_array_equal(batch[b].numpy(), model.forward(ids[b]))


def test_logits_to_keep_returns_the_last_positions(loaded):
    model = loaded["text"]
    ids = np.stack([_ids(9, seed=9), _ids(9, seed=10)])
    full = model.forward(ids)
    np.testing.assert_array_equal(model.forward(ids, logits_to_keep=3), full[:, -3:])
    np.testing.assert_array_equal(model.forward(ids[0], logits_to_keep=50), full[0])
    with pytest.raises(ValueError, match="logits_to_keep"):
        model.forward(ids, logits_to_keep=-1)


def test_lists_are_taken_as_arrays(loaded):
    model = loaded["text"]
    assert model.eos_token_ids == [TEXT_CONFIG["eos_token_id"]]
    np.testing.assert_array_equal(model.forward([3, 1, 4]), model.forward(np.array([3, 1, 4])))


def test_bad_inputs_raise_clear_errors(checkpoints, loaded, tmp_path):
    model = loaded["text"]
    with pytest.raises(rio_rt.CheckpointError, match="no such checkpoint folder"):
        rio_rt.Model.from_pretrained(tmp_path / "missing")
    with pytest.raises(TypeError, match="ids: expected dtype int32 or int64"):
        model.forward(np.array([1.5]))
    with pytest.raises(ValueError, match="ids.*outside the vocabulary of 1000"):
        model.forward(np.array([1, 1000]))
    with pytest.raises(ValueError, match="input_embeds.*hidden_size 128"):
        model.forward(input_embeds=np.zeros((3, 127), np.float32))
    with pytest.raises(ValueError, match="input_embeds.*NaN"):
        model.forward(input_embeds=np.full((2, 128), np.nan, np.float32))
    with pytest.raises(TypeError, match="exactly one of ids and input_embeds"):
        model.forward()
    with pytest.raises(ValueError, match="at least one token"):
        model.forward(np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="cache"):
        model.forward(np.zeros((2, 3), np.int64), cache=model.new_cache())
    folder, _ = checkpoints["text"]
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((folder / "config.json").read_text())
    config["num_experts_per_tok"] = 99
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(rio_rt.ConfigError, match="num_experts_per_tok"):
        rio_rt.Model.from_pretrained(broken)


# --- YaRN (spec 2.2): inv_freq and the attention factor as transformers computes them ---------

YARN_CASES = [
    dict(factor=4.0, original_max_position_embeddings=32),
    dict(factor=8.0, original_max_position_embeddings=64, beta_fast=16, beta_slow=2, truncate=False),
    dict(factor=2.0, original_max_position_embeddings=16, mscale=0.707, mscale_all_dim=0.5),
    dict(factor=3.0, original_max_position_embeddings=16, attention_factor=1.25),
    dict(factor=16.0, original_max_position_embeddings=8, mscale=1.0),  # mscale alone: the factor's default
]


def _yarn_checkpoint(tmp_path, case, seed=4):
    from tiny_models import build_qwen35
    rope = dict(rope_type="yarn", rope_theta=1e7, partial_rotary_factor=0.25, mrope_section=[3, 3, 2],
                mrope_interleaved=True, **case)
    return build_qwen35(tmp_path, seed=seed, rope_parameters=rope, max_position_embeddings=128)


@pytest.mark.parametrize("case", range(len(YARN_CASES)))
def test_yarn_inv_freq_and_attention_factor_match_transformers(tmp_path, case):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    hf = _yarn_checkpoint(tmp_path, YARN_CASES[case])
    want_freq, want_factor = ROPE_INIT_FUNCTIONS["yarn"](hf.config)
    got_freq, got_factor = rio_rt.Model.from_pretrained(tmp_path)._native.rope()
    np.testing.assert_allclose(np.array(got_freq), want_freq.numpy(), rtol=1e-6, atol=0)
    assert got_factor == pytest.approx(want_factor, rel=1e-6)
    assert want_factor != 1.0


def test_yarn_logits_match_transformers_and_the_legacy_rope_scaling_key(tmp_path):
    """A prefill longer than original_max_position_embeddings, then cached steps, in fp32; the
    same config written the transformers 4 way (`rope_scaling` + flat `rope_theta`) loads the
    same model."""
    hf = _yarn_checkpoint(tmp_path, YARN_CASES[0])
    model = rio_rt.Model.from_pretrained(tmp_path, dtype="float32")
    ids = _ids(PREFILL + 4, seed=11)
    want = _hf_logits(hf, ids)
    cache = model.new_cache()
    got = np.concatenate([model.forward(ids[:PREFILL], cache=cache)] +
                         [model.forward(ids[t:t + 1], cache=cache) for t in range(PREFILL, len(ids))])
    assert _max_diff(got, want) <= TOL
    config = json.loads((tmp_path / "config.json").read_text())
    params = config.pop("rope_parameters")
    config["rope_theta"] = params.pop("rope_theta")
    config["partial_rotary_factor"] = params.pop("partial_rotary_factor")
    config["rope_scaling"] = {"type": params.pop("rope_type"), **params}
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps(config))
    (legacy / "model.safetensors").symlink_to(tmp_path / "model.safetensors")
    np.testing.assert_array_equal(rio_rt.Model.from_pretrained(legacy, dtype="float32").forward(ids[:PREFILL]), got[:PREFILL])
