"""`rio-rt bench decode` and its benchmark checkpoint, on the tiny shape.

The checkpoint builder is checked against transformers (every key and shape it expects, nothing
else), the per-token byte count against a count written out from the model dimensions, and the
command end to end (JSON shape, rio rows, skipped systems). llama.cpp runs only where
benches/llama_cpp/build.sh has already built it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from rio_rt.bench import checkpoint, decode
from rio_rt.cli import main

REPO = Path(__file__).resolve().parents[1]
LLAMA_CPP_DIR = REPO / "bench-results" / "llama.cpp"
# Small peaks and timings: the smoke runs check plumbing, not speed.
FAST = ["--peak-bytes", str(32 << 20), "--peak-seconds", "0.05", "--gemm-size", "128", "--repeats", "1",
        "--prompt-lengths", "4,9", "--decode-tokens", "3"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return checkpoint.ensure_checkpoint(tmp_path_factory.mktemp("bench_ck"), "tiny", seed=0)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_is_deterministic_and_written_whole(tiny_checkpoint, tmp_path):
    again = checkpoint.ensure_checkpoint(tmp_path, "tiny", seed=0)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json"):
        assert _sha256(again / name) == _sha256(tiny_checkpoint / name), name
    other_seed = checkpoint.ensure_checkpoint(tmp_path, "tiny", seed=1)
    assert _sha256(other_seed / "model.safetensors") != _sha256(again / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([again.name, other_seed.name])  # no temp folders left
    # A second call reuses the folder instead of rebuilding it.
    mtime = (again / "model.safetensors").stat().st_mtime_ns
    assert checkpoint.ensure_checkpoint(tmp_path, "tiny", seed=0) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == mtime


def test_checkpoint_loads_in_transformers_with_every_key(tiny_checkpoint):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, info = transformers.AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16, output_loading_info=True)
    assert type(model).__name__ == "Qwen3_5MoeForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # Stored values are the ones the recipe draws: norms 1 + 0, GDN norm 1, A_log in log[1, 16).
    layer = model.model.layers[0]
    assert torch.all(layer.input_layernorm.weight == 0)
    assert torch.all(layer.linear_attn.norm.weight == 1)
    a_log = layer.linear_attn.A_log.float()
    assert torch.all(a_log >= 0) and torch.all(a_log < np.log(16.0))
    # Routing spreads: the router's logits on random hidden states pick many different experts.
    gate = layer.mlp.gate.weight.float()
    chosen = torch.topk(torch.randn(64, gate.shape[1], generator=torch.Generator().manual_seed(0)) @ gate.T, 2).indices
    assert len(torch.unique(chosen)) == gate.shape[0]


def test_tokenizer_has_the_full_vocabulary(tiny_checkpoint):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert tok.get_vocab_size() == config["vocab_size"] == 512
    text = "Hello, world! 123 <think>ünïcode 🚀</think><|im_end|>"
    ids = tok.encode(text).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.token_to_id("<|endoftext|>") == config["eos_token_id"]
    assert ids[-1] == tok.token_to_id("<|im_end|>")
    assert len(ids) < len(text.encode())  # merges apply


def test_bytes_per_token_of_the_35b_shape():
    """Counted by hand from spec sections 5-7 for hidden 2048, 4 layers (3 GDN + 1 attention)."""
    h, e_bytes = 2048, 2
    experts = 8 * 3 * h * 512  # top-8 of [2I, H] + [H, I]
    moe = experts + 256 * h + 3 * h * 512 + h  # + router + shared expert + its gate
    gdn = (2 * 2048 + 4096) * h + 4096 * h + 2 * 32 * h + 4096 * h + 8192 * 4 + 32  # qkv, z, b, a, out, conv, dt_bias
    gdn_f32 = 32 + 128  # A_log, gated norm (F32)
    attn = 2 * 16 * 256 * h + 2 * 2 * 256 * h + h * 16 * 256 + 2 * 256  # q(+gate), k, v, o, q/k norms
    norms = 4 * 2 * h + h
    ends = h + 32768 * h  # one embedding row + lm_head
    want = e_bytes * (4 * moe + 3 * gdn + attn + norms + ends) + 4 * 3 * gdn_f32
    shape = checkpoint.SHAPES["35b-a3b-4l"]
    assert checkpoint.bytes_per_decoded_token(shape) == want
    assert 0.60e9 < want < 0.65e9  # the "about 0.63 GB"


def test_model_cost_from_headers_matches_the_recipe(tiny_checkpoint):
    cost = decode.model_cost(tiny_checkpoint)
    shape = checkpoint.SHAPES["tiny"]
    assert cost.bytes_per_token == checkpoint.bytes_per_decoded_token(shape)
    assert cost.checkpoint_bytes == checkpoint.checkpoint_bytes(shape)
    assert cost.checkpoint_bytes + 8 < (tiny_checkpoint / "model.safetensors").stat().st_size
    assert cost.lm_head_flops == 2 * shape.vocab * shape.hidden


def _run_json(args, capsys) -> dict:
    assert main(["bench", "decode", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_decode_runs_and_reports(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no llama-bench on PATH, whatever the machine has
    plot = tmp_path / "decode.png"
    doc = _run_json(["--model", str(tiny_checkpoint), "--systems", "rio,llama.cpp", "--llama-cpp-dir", str(tmp_path / "none"),
                     "--plot", str(plot), *FAST], capsys)
    assert doc["bench"] == "decode"
    assert {"threads", "read_gb_s", "bf16_gemm_gflop_s"} <= set(doc["machine"])
    assert doc["machine"]["read_gb_s"] > 0 and doc["machine"]["bf16_gemm_gflop_s"] > 0
    rows = {(r["system"], r["phase"], r["tokens"]): r for r in doc["rows"]}
    assert set(rows) == {("rio_rt", "prefill", 4), ("rio_rt", "prefill", 9), ("rio_rt", "decode", 3)}
    for r in doc["rows"]:
        assert {"system", "phase", "tokens", "tok_s", "gb_s", "pct_of_floor"} <= set(r)
        assert r["tok_s"] > 0 and r["runs"] == 1
    dec = rows[("rio_rt", "decode", 3)]
    assert dec["depth"] == 4
    assert dec["gb_s"] == pytest.approx(doc["model"]["bytes_per_token"] * dec["tok_s"] / 1e9)
    assert dec["pct_of_floor"] == pytest.approx(100 * dec["gb_s"] / doc["machine"]["read_gb_s"])
    assert rows[("rio_rt", "prefill", 9)]["pct_of_peak"] > 0
    assert doc["skipped"] == [{"system": "llama.cpp", "reason": doc["skipped"][0]["reason"]}]
    assert "build.sh" in doc["skipped"][0]["reason"]
    assert plot.stat().st_size > 1000


def test_bench_decode_with_transformers(tiny_checkpoint, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    doc = _run_json(["--model", str(tiny_checkpoint), "--systems", "rio,transformers", *FAST], capsys)
    systems = {(r["system"], r["phase"]) for r in doc["rows"]}
    assert ("transformers", "decode") in systems and ("transformers", "prefill") in systems
    assert {(r["vs"], r["phase"], r["tokens"]) for r in doc["ratios"]} == {("transformers", "prefill", 4), ("transformers", "prefill", 9), ("transformers", "decode", 3)}
    check = doc["check"]
    # Same weights, both bf16: logits agree to bf16 rounding of a few layers (not bitwise: different kernels).
    assert check["rio_vs_transformers_max_abs_logit_diff"] < 0.1 * max(check["logit_scale"], 1e-3) + 0.05
    table = decode.format_table(doc)
    assert "rio/tf" in table and "transformers" in table


FAKE_LLAMA_BENCH = """#!{python}
import json, sys
if sys.argv[1:] == ["--version"]:
    sys.exit("version: 0 (stand-in)")
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
if {fail!r}:
    sys.exit("llama-bench: cannot load model")
# 1 ms per prompt token, 10 ms per generated token (llama-bench reports ns per repetition)
print(json.dumps([{{"n_prompt": int(args["-p"]), "n_gen": int(args["-n"]), "n_depth": int(args["-d"]),
                   "samples_ns": [int(args["-p"]) * 1000000 + int(args["-n"]) * 10000000]}}]))
"""


@pytest.mark.parametrize("fail", [False, True])
def test_bench_decode_reads_llama_bench_json(tiny_checkpoint, tmp_path, capsys, fail):
    """The llama.cpp plumbing against a stand-in llama-bench with known timings (or one that fails)."""
    fake = tmp_path / "llama-bench"
    fake.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable, fail=fail))
    fake.chmod(0o755)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    doc = _run_json(["--model", str(tiny_checkpoint), "--systems", "llama.cpp,rio", "--llama-bench", str(fake), "--gguf", str(gguf), *FAST], capsys)
    llama = {(r["phase"], r["tokens"]): r for r in doc["rows"] if r["system"] == "llama.cpp"}
    if fail:
        assert not llama and [s["system"] for s in doc["skipped"]] == ["llama.cpp"]
        assert "cannot load model" in doc["skipped"][0]["reason"]
        return
    assert doc["llama_cpp"]["version"] == "version: 0 (stand-in)"
    assert llama[("prefill", 4)]["tok_s"] == pytest.approx(1000.0)
    assert llama[("prefill", 9)]["tok_s"] == pytest.approx(1000.0)
    assert llama[("decode", 3)]["tok_s"] == pytest.approx(100.0)
    ratios = {(r["phase"], r["tokens"]): r["ratio"] for r in doc["ratios"] if r["vs"] == "llama.cpp"}
    rio = {(r["phase"], r["tokens"]): r["tok_s"] for r in doc["rows"] if r["system"] == "rio_rt"}
    assert ratios[("decode", 3)] == pytest.approx(rio[("decode", 3)] / 100.0)


def test_bench_decode_rejects_bad_arguments(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "decode", "--model", str(tiny_checkpoint), "--systems", "rio,vllm"])
    assert "rio, transformers, llama.cpp" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "decode", "--model", str(tmp_path)])
    assert "no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "decode", "--model", str(tiny_checkpoint), "--prompt-lengths", "0,5"])


@pytest.mark.skipif(not os.access(LLAMA_CPP_DIR / "bin" / "llama-bench", os.X_OK), reason="llama.cpp not built (benches/llama_cpp/build.sh)")
def test_bench_decode_with_llama_cpp(tiny_checkpoint, capsys):
    # The GGUF is converted on first use, next to the checkpoint.
    doc = _run_json(["--model", str(tiny_checkpoint), "--systems", "rio,llama.cpp", "--llama-cpp-dir", str(LLAMA_CPP_DIR), *FAST], capsys)
    assert not doc["skipped"], doc["skipped"]
    assert (tiny_checkpoint / "gguf" / "model-bf16.gguf").is_file()
    llama = {(r["phase"], r["tokens"]): r for r in doc["rows"] if r["system"] == "llama.cpp"}
    assert set(llama) == {("prefill", 4), ("prefill", 9), ("decode", 3)}
    assert all(r["tok_s"] > 0 for r in llama.values())
    assert {r["vs"] for r in doc["ratios"]} == {"llama.cpp"}
    assert doc["llama_cpp"]["gguf"].endswith("model-bf16.gguf")
