"""Weights are read in place: loading a checkpoint larger than half of RAM costs almost no memory,
and a forward step reads only the routed experts' pages.

The checkpoint is a sparse file (``truncate``: no disk is written for the experts): a valid
safetensors header, small tensors (embeddings, norms, attention, routers, lm_head) written with
random bf16 values, and fused expert tensors left as holes, which read as zeros. A subprocess
loads it and reports its load time and ``/proc/self/status`` (VmRSS, RssFile, RssAnon) after
loading and after a one-token forward.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("reads /proc/self/status", allow_module_level=True)

BF16 = np.dtype(ml_dtypes.bfloat16)
MIB = 1 << 20


def _ram_bytes() -> int:
    with open("/proc/meminfo") as f:
        return int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024


def _config(ram: int) -> dict:
    """A Qwen3-MoE config whose fused experts alone exceed 0.6 × RAM."""
    hidden, inter, experts = 1024, 2048, 64
    layer_bytes = experts * 3 * inter * hidden * 2
    layers = max(2, int(0.6 * ram / layer_bytes) + 1)
    return dict(model_type="qwen3_moe", vocab_size=1024, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=8, num_key_value_heads=2, head_dim=128, num_experts=experts,
                num_experts_per_tok=2, moe_intermediate_size=inter, norm_topk_prob=True, rms_norm_eps=1e-6,
                rope_parameters=dict(rope_type="default", rope_theta=1e6), tie_word_embeddings=False)


def _write_sparse_checkpoint(folder: Path, c: dict) -> tuple[int, int]:
    """Writes the checkpoint; returns (file size, bytes of one expert's three matrices)."""
    h, i, e, v = c["hidden_size"], c["moe_intermediate_size"], c["num_experts"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    shapes = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h], "lm_head.weight": [v, h]}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({
            p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
            p + "self_attn.q_proj.weight": [q, h], p + "self_attn.k_proj.weight": [kv, h],
            p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, q],
            p + "self_attn.q_norm.weight": [c["head_dim"]], p + "self_attn.k_norm.weight": [c["head_dim"]],
            p + "mlp.gate.weight": [e, h],
            p + "mlp.experts.gate_up_proj": [e, 2 * i, h], p + "mlp.experts.down_proj": [e, h, i],
        })
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    rng = np.random.default_rng(0)
    path = folder / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name, shape in shapes.items():
            if ".experts." in name:
                continue  # a hole: zeros, no disk written
            values = rng.standard_normal(shape) * (0.5 if name.endswith("norm.weight") else 1.0 / np.sqrt(shape[-1]))
            if name.endswith("norm.weight"):
                values += 1.0
            f.seek(start + header[name]["data_offsets"][0])
            f.write(values.astype(BF16).tobytes())
        f.truncate(start + offset)
    (folder / "config.json").write_text(json.dumps(c))
    return start + offset, 3 * i * h * 2


PROBE = r"""
import json, sys, time
import numpy as np
import rio_rt

def status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssFile", "RssAnon"):
                fields[key] = int(value.split()[0]) * 1024
    return fields

before = status()
t0 = time.perf_counter()
model = rio_rt.Model.from_pretrained(sys.argv[1], threads=1)
load_s = time.perf_counter() - t0
loaded = status()
logits = model.forward(np.array([5]))
stepped = status()
print(json.dumps({"before": before, "loaded": loaded, "stepped": stepped, "load_s": load_s,
                  "finite": bool(np.isfinite(logits).all()), "dtype": model._native.dtype}))
"""


@pytest.mark.skipif(os.environ.get("RIO_RT_SKIP_BIG_SPARSE") == "1", reason="asked to skip")
def test_loading_maps_and_a_step_touches_only_routed_experts(tmp_path):
    ram = _ram_bytes()
    c = _config(ram)
    size, expert_bytes = _write_sparse_checkpoint(tmp_path, c)
    assert size > ram / 2
    if os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize < 64 * MIB:
        pytest.skip("no room for the small tensors")
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["finite"] and r["dtype"] == "bfloat16"
    # Loading parses headers and maps the file: well under a second and under 64 MB more RSS,
    # against a checkpoint of > RAM / 2.
    assert r["load_s"] < 5.0, r
    grown = r["loaded"]["VmRSS"] - r["before"]["VmRSS"]
    assert grown < 64 * MIB, r
    assert r["loaded"]["RssFile"] - r["before"]["RssFile"] < 32 * MIB, r
    # One token: each layer reads its top-2 experts (plus readahead around them), never the rest.
    layers, k = c["num_hidden_layers"], c["num_experts_per_tok"]
    routed = layers * k * expert_bytes
    touched = r["stepped"]["RssFile"] - r["loaded"]["RssFile"]
    assert touched >= 0.5 * routed, (touched, routed)
    assert touched <= 3 * routed + 64 * MIB, (touched, routed)
    assert touched < 0.05 * size, (touched, size)
    assert r["stepped"]["RssAnon"] - r["loaded"]["RssAnon"] < 64 * MIB, r
