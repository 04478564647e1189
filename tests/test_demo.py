"""``rio-rt demo``: built once and cached, nothing half-written, deterministic, a checkpoint that
transformers loads and agrees with, and a run that says plainly that its weights are random."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

import rio_rt
import rio_rt.demo as demo
from rio_rt.cli import main


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_builds_once_then_reuses_the_cache(tmp_path, capsys, monkeypatch):
    t0 = time.perf_counter()
    assert main(["demo", "--cache-dir", str(tmp_path), "--max-new-tokens", "12"]) == 0
    first_s = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "Building the demo checkpoint" in out and "tokenizer:" in out and "model.safetensors:" in out
    assert "RANDOM" in out and "gibberish" in out
    assert "SwiReasoning" in out and "entropy" in out and "ref_H" in out  # the trace table
    assert first_s < 30, f"first demo run took {first_s:.1f} s"

    (folder,) = [p for p in tmp_path.iterdir()]
    assert folder.name == f"demo-qwen35moe-{demo.recipe_key()}"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached checkpoint was rebuilt")

    monkeypatch.setattr(demo, "build_demo_checkpoint", no_rebuild)
    t0 = time.perf_counter()
    assert main(["demo", "--cache-dir", str(tmp_path), "--max-new-tokens", "12", "--reasoning", "soft"]) == 0
    second_s = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "Using the cached demo checkpoint" in out and "Building" not in out and "RANDOM" in out
    assert "SoftThinking" in out
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert second_s < 10, f"cached demo run took {second_s:.1f} s"


def test_default_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo.default_cache_root() == tmp_path / "xdg" / "rio_rt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert demo.default_cache_root() == tmp_path / "home" / ".cache" / "rio_rt"


def test_an_interrupted_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_writer(path, tensors):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt("interrupted while writing weights")

    monkeypatch.setattr(demo, "write_safetensors", broken_writer)
    with pytest.raises(KeyboardInterrupt):
        demo.demo_checkpoint(tmp_path, progress=lambda _: None)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    folder, built = demo.demo_checkpoint(tmp_path, progress=lambda _: None)
    assert built and [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert demo.demo_checkpoint(tmp_path, progress=lambda _: None) == (folder, False)


def test_build_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    demo.build_demo_checkpoint(a, progress=lambda _: None)
    demo.build_demo_checkpoint(b, progress=lambda _: None)
    assert _digest(a) == _digest(b)
    assert set(_digest(a)) == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                               "tokenizer_config.json", "chat_template.jinja"}


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_ckpt")
    demo.build_demo_checkpoint(folder, progress=lambda _: None)
    return folder


def test_writer_round_trips_through_safetensors(demo_folder):
    from safetensors.numpy import load_file
    import ml_dtypes
    stored = load_file(str(demo_folder / "model.safetensors"))
    weights = demo._weights(demo.DEMO_TEXT_CONFIG, len(rio_rt.Tokenizer.from_pretrained(demo_folder)),
                            np.random.default_rng(demo.SEED))
    assert set(stored) == set(weights)
    for name, (dtype, bits) in weights.items():
        want = bits.view(ml_dtypes.bfloat16) if dtype == "BF16" else bits
        assert stored[name].dtype == want.dtype and stored[name].shape == want.shape, name
        assert np.array_equal(stored[name].view(np.uint8), np.ascontiguousarray(want).view(np.uint8)), name
    # Round to nearest even, as torch's float32 -> bfloat16 cast.
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert np.array_equal(demo.to_bf16_bits(x), x.astype(ml_dtypes.bfloat16).view(np.uint16))


def test_transformers_loads_the_demo_checkpoint_and_agrees(demo_folder):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_tok = transformers.AutoTokenizer.from_pretrained(demo_folder)
    tok = rio_rt.Tokenizer.from_pretrained(demo_folder)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Was ist MoE? 🚀"}]
    for thinking in (True, False):
        want = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
        assert tok.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=thinking) == want
    ids = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True), add_special_tokens=False)
    assert ids == hf_tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True), add_special_tokens=False)

    hf = transformers.AutoModelForCausalLM.from_pretrained(demo_folder, dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
    got = np.asarray(rio_rt.Model.from_pretrained(demo_folder, dtype="float32").forward(np.array(ids)))
    # f32 compute on the same bf16 weights: rio_rt's f32 path matches transformers to ~1e-5 (tests/test_model_qwen35.py).
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
