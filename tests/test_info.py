"""``rio-rt info`` / ``rio_rt.info.checkpoint_info``.

- Parameter and byte counts equal an independent count from the safetensors headers (read with
  the ``safetensors`` package) on the demo checkpoint (fused experts, F32 tensors among BF16),
  on transformers' tiny Qwen3.5-MoE (per-expert tensors) and on a tiny Qwen3-MoE;
- the 397B-A17B numbers of spec sections 6 and 7 (parameters, active parameters, bytes read per
  decoded token by group, KV cache and Gated DeltaNet state) from a header-only 800 GB checkpoint
  (sparse shards: nothing but the headers is written), read in well under a second, and from
  the config alone;
- counting from the config alone gives the header counts of real checkpoints;
- the CLI's text and JSON, and errors.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import rio_rt
from rio_rt.cli import main
from rio_rt.demo import build_demo_checkpoint
from rio_rt.info import checkpoint_info

BYTES = {"BF16": 2, "F16": 2, "F32": 4}


def _header_tensors(folder: Path):
    """{stored key: (dtype, shape)} of every tensor, read with the safetensors package."""
    from safetensors import safe_open
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    out = {}
    for name in files:
        with safe_open(str(folder / name), framework="np") as f:
            for key in f.keys():
                sl = f.get_slice(key)
                out[key] = (sl.get_dtype(), list(sl.get_shape()))
    return out


def _independent_counts(folder: Path, experts: int, top_k: int, hidden: int):
    """Spec section 7's rule from the raw keys: routed experts count top_k/experts, the embedding
    one row, vision/MTP nothing, the rest in full. Returns (total, active, bytes/token, skipped)."""
    total = active = per_token_bytes = skipped = 0
    for key, (dtype, shape) in _header_tensors(folder).items():
        n = 1
        for d in shape:
            n *= d
        if key.startswith(("mtp.", "model.visual.")):
            skipped += n
            continue
        total += n
        if ".mlp.experts." in key:
            a = n * top_k // experts
        elif key.endswith("embed_tokens.weight"):
            a = hidden
        else:
            a = n
        active += a
        per_token_bytes += a * BYTES[dtype]
    return total, active, per_token_bytes, skipped


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_info")
    build_demo_checkpoint(folder, progress=lambda _: None)
    return folder


def _check_against_headers(folder: Path):
    info = checkpoint_info(folder)
    assert info.counted_from == "headers"
    d = info.dims
    total, active, per_token, skipped = _independent_counts(folder, d["num_experts"], d["num_experts_per_tok"], d["hidden_size"])
    assert info.params_total == total
    assert info.params_active == active
    assert info.bytes_per_token == per_token
    assert info.skipped_params == skipped
    assert info.bytes_total == sum(g.bytes for g in info.groups.values())
    assert info.format().startswith(f"{folder}: {info.model_type}, {len(info.layer_types)} layers")
    assert json.loads(json.dumps(info.to_dict()))["params_active"] == active
    return info


def test_demo_counts_equal_header_count(demo_folder):
    info = _check_against_headers(demo_folder)
    assert info.model_type == "qwen3_5_moe"
    assert info.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    assert info.dtype_params["F32"] == 3 * (8 + 32)  # A_log [8] and the gated norm [32] of 3 GDN layers
    assert info.tokenizer is not None and info.tokenizer["chat_template"] and info.tokenizer["eos_token"] == "<|im_end|>"
    tok = rio_rt.Tokenizer.from_pretrained(demo_folder)
    assert info.eos_token_ids == [tok.eos_token_id, tok.pad_token_id]  # generation_config.json's list
    assert info.tokenizer["think_token_id"] == tok.think_token_id


def test_per_expert_checkpoints_equal_header_count(tiny_qwen35, tiny_qwen3moe):
    info = _check_against_headers(Path(tiny_qwen35[0]))
    assert info.groups["routed experts"].params == 4 * 16 * 3 * 48 * 128
    info = _check_against_headers(Path(tiny_qwen3moe[0]))
    assert info.model_type == "qwen3_moe" and info.tokenizer is None


# ----- the 397B numbers of the spec -------------------------------------------------------------

CONFIG_397B = {
    "architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe", "tie_word_embeddings": False,
    "text_config": {
        "model_type": "qwen3_5_moe_text", "vocab_size": 248320, "hidden_size": 4096, "num_hidden_layers": 60,
        "num_attention_heads": 32, "num_key_value_heads": 2, "head_dim": 256, "linear_num_key_heads": 16,
        "linear_num_value_heads": 64, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4, "num_experts": 512, "num_experts_per_tok": 10, "moe_intermediate_size": 1024,
        "shared_expert_intermediate_size": 1024, "full_attention_interval": 4, "rms_norm_eps": 1e-6,
        "hidden_act": "silu", "max_position_embeddings": 262144, "eos_token_id": 248044,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                            "mrope_section": [11, 11, 10], "mrope_interleaved": True},
    },
}


def _tensors_397b():
    """(key, dtype, shape) of the official BF16 layout (spec section 5), plus two skipped tensors."""
    H, V, E, I, Is = 4096, 248320, 512, 1024, 1024
    p = "model.language_model."
    out = [(p + "embed_tokens.weight", "BF16", [V, H]), (p + "norm.weight", "BF16", [H]), ("lm_head.weight", "BF16", [V, H])]
    for L in range(60):
        b = f"{p}layers.{L}."
        out += [(b + "input_layernorm.weight", "BF16", [H]), (b + "post_attention_layernorm.weight", "BF16", [H]),
                (b + "mlp.gate.weight", "BF16", [E, H]), (b + "mlp.experts.gate_up_proj", "BF16", [E, 2 * I, H]),
                (b + "mlp.experts.down_proj", "BF16", [E, H, I]),
                (b + "mlp.shared_expert.gate_proj.weight", "BF16", [Is, H]),
                (b + "mlp.shared_expert.up_proj.weight", "BF16", [Is, H]),
                (b + "mlp.shared_expert.down_proj.weight", "BF16", [H, Is]),
                (b + "mlp.shared_expert_gate.weight", "BF16", [1, H])]
        if L % 4 != 3:
            a = b + "linear_attn."
            out += [(a + "in_proj_qkv.weight", "BF16", [12288, H]), (a + "in_proj_z.weight", "BF16", [8192, H]),
                    (a + "in_proj_b.weight", "BF16", [64, H]), (a + "in_proj_a.weight", "BF16", [64, H]),
                    (a + "conv1d.weight", "BF16", [12288, 1, 4]), (a + "A_log", "F32", [64]),
                    (a + "dt_bias", "BF16", [64]), (a + "norm.weight", "F32", [128]),
                    (a + "out_proj.weight", "BF16", [H, 8192])]
        else:
            a = b + "self_attn."
            out += [(a + "q_proj.weight", "BF16", [16384, H]), (a + "k_proj.weight", "BF16", [512, H]),
                    (a + "v_proj.weight", "BF16", [512, H]), (a + "o_proj.weight", "BF16", [H, 8192]),
                    (a + "q_norm.weight", "BF16", [256]), (a + "k_norm.weight", "BF16", [256])]
    out += [("mtp.fc.weight", "BF16", [H, 2 * H]), ("model.visual.merger.mlp.0.weight", "BF16", [1152, 1152])]
    return out


def _write_header_only_checkpoint(folder: Path, tensors, shards: int) -> None:
    """Sharded safetensors whose data sections are holes (sparse files): valid headers, no data."""
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header, offset = {}, 0
        for key, dtype, shape in tensors[s::shards]:
            n = BYTES[dtype]
            for d in shape:
                n *= d
            header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[key] = name
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        with open(folder / name, "wb") as f:
            f.write(len(blob).to_bytes(8, "little"))
            f.write(blob)
            f.truncate(8 + len(blob) + offset)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _assert_397b_numbers(info) -> None:
    g = {name: grp.active_params for name, grp in info.groups.items()}
    # Spec section 7, row by row (parameters read per decoded token, batch 1).
    assert g == {"routed experts": 7_549_747_200, "router": 125_829_120, "shared expert": 755_220_480,
                 "linear attention": 5_310_639_360, "full attention": 1_572_871_680, "norms": 495_616,
                 "lm_head": 1_017_118_720, "embedding": 4_096}
    assert info.params_active == 16_331_926_272                         # "16.33 B"
    assert info.params_total == 396_346_350_336                         # section 6: "396.35 B" text parameters
    assert info.groups["embedding"].params == 1_017_118_720            # "+1.02 B embedding table = A17B"
    # 32.66 GB: every parameter at 2 bytes, except A_log and the gated norm (F32) of the 45 GDN layers.
    assert info.bytes_per_token == 2 * 16_331_926_272 + 45 * (64 + 128) * 2
    assert round(info.bytes_per_token / 1e9, 2) == 32.66
    assert info.dtype_params["F32"] == 8_640                            # section 5: 45 x (64 + 128)
    assert info.kv_cache_bytes_per_token == 30_720                      # "30 KB per context token"
    assert info.linear_state_elements * 4 == 188_743_680               # "188.7 MB" fp32 GDN state
    assert info.conv_state_elements * 2 == 3_317_760                   # "about 3.3 MB" conv state
    assert info.layer_types.count("full_attention") == 15 and info.layer_types[3] == "full_attention"


def test_397b_numbers_of_the_spec(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG_397B))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [248046, 248044]}))
    _write_header_only_checkpoint(tmp_path, _tensors_397b(), shards=8)
    t0 = time.perf_counter()
    info = checkpoint_info(tmp_path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"info read headers only, yet took {elapsed:.2f} s"
    assert info.counted_from == "headers"
    _assert_397b_numbers(info)
    assert info.skipped_tensors == 2 and info.skipped_params == 4096 * 8192 + 1152 * 1152
    assert info.shards == 8 and info.file_bytes > 790e9                 # sparse: nothing but headers on disk
    assert info.eos_token_ids == [248046, 248044]
    assert info.tokenizer is None


def test_397b_numbers_from_the_config_alone(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG_397B))
    info = checkpoint_info(tmp_path)
    assert info.counted_from == "config" and info.shards == 0
    _assert_397b_numbers(info)
    assert info.eos_token_ids == [248044]  # config.json's, without a generation_config.json
    assert "counted from the shapes config.json implies" in info.format()


def _config_only_copy(folder: Path, dest: Path) -> Path:
    dest.mkdir()
    (dest / "config.json").write_bytes((folder / "config.json").read_bytes())
    return dest


def test_config_counts_equal_header_counts(demo_folder, tiny_qwen35, tiny_qwen3moe, tmp_path):
    # The demo stores bf16 with f32 A_log / GDN norm, as the config-only count assumes: equal to the byte.
    headers = checkpoint_info(demo_folder)
    config = checkpoint_info(_config_only_copy(demo_folder, tmp_path / "demo"))
    assert config.counted_from == "config" and config.groups == headers.groups
    assert config.dtype_params == headers.dtype_params
    # transformers' tiny checkpoints are stored in f32: the same parameters, other bytes.
    for i, folder in enumerate((Path(tiny_qwen35[0]), Path(tiny_qwen3moe[0]))):
        headers = checkpoint_info(folder)
        config = checkpoint_info(_config_only_copy(folder, tmp_path / f"tiny{i}"))
        assert {k: (g.params, g.active_params) for k, g in config.groups.items()} == \
            {k: (g.params, g.active_params) for k, g in headers.groups.items()}


def test_cli_text_and_json(demo_folder, capsys):
    assert main(["info", str(demo_folder)]) == 0
    text = capsys.readouterr().out
    info = checkpoint_info(demo_folder)
    assert "qwen3_5_moe, 4 layers (3 Gated DeltaNet + 1 full attention)" in text
    assert "bytes read per decoded token" in text and "routed experts" in text and "chat template yes" in text
    assert main(["info", str(demo_folder), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params_total"] == info.params_total and doc["bytes_per_token"] == info.bytes_per_token
    assert doc["groups"]["routed experts"]["active_params"] == info.groups["routed experts"].active_params
    assert doc["dims"]["num_experts"] == 32


def test_errors(tmp_path, capsys):
    with pytest.raises(rio_rt.ConfigError, match="config.json"):
        checkpoint_info(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(rio_rt.ConfigError, match="model_type"):
        checkpoint_info(tmp_path)
    assert main(["info", str(tmp_path)]) == 2
    assert "rio-rt info: error" in capsys.readouterr().err

    (tmp_path / "config.json").write_text(json.dumps(CONFIG_397B))
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")  # header longer than the file
    with pytest.raises(rio_rt.CheckpointError, match="model.safetensors"):
        checkpoint_info(tmp_path)
