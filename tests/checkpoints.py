"""Writers of small synthetic checkpoints for tests: a plain safetensors writer (independent of the
Rust reader), checkpoint folders in either key prefix, expert layout and sharding, and a random
Qwen3.5-MoE-shaped set of weights with logical names (spec section 5).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Mapping

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPE_NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", BF16: "BF16", np.dtype(np.int64): "I64"}


def safetensors_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file: header padded to 8 bytes, tensors packed in the given order."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        blob = arr.tobytes()
        header[name] = {"dtype": DTYPE_NAMES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray]) -> Path:
    path = Path(path)
    path.write_bytes(safetensors_bytes(tensors))
    return path


def stored_key(logical: str, prefix: str) -> str:
    """The key a logical name is stored under; ``lm_head.weight`` is always top level."""
    return logical if logical.startswith("lm_head.") else prefix + logical


def split_experts(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fused ``experts.gate_up_proj [E, 2I, H]`` / ``experts.down_proj [E, H, I]`` to per-expert
    ``experts.{e}.{gate,up,down}_proj.weight``, as transformers 5 saves them."""
    out: dict[str, np.ndarray] = {}
    for name, arr in tensors.items():
        if name.endswith(".experts.gate_up_proj"):
            block = name[: -len(".gate_up_proj")]
            inter = arr.shape[1] // 2
            for e in range(arr.shape[0]):
                out[f"{block}.{e}.gate_proj.weight"] = arr[e, :inter]
                out[f"{block}.{e}.up_proj.weight"] = arr[e, inter:]
        elif name.endswith(".experts.down_proj"):
            block = name[: -len(".down_proj")]
            for e in range(arr.shape[0]):
                out[f"{block}.{e}.down_proj.weight"] = arr[e]
        else:
            out[name] = arr
    return out


def write_checkpoint(
    folder: Path,
    tensors: Mapping[str, np.ndarray],
    *,
    prefix: str = "model.language_model.",
    layout: str = "fused",
    shards: int = 1,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Writes logical ``tensors`` as a checkpoint folder.

    ``layout``: ``fused`` or ``per_expert``; ``shards`` > 1 writes ``model-0000i-of-0000n`` files and
    an index; ``extra`` tensors are stored under their exact keys (vision, MTP, ...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if layout not in ("fused", "per_expert"):
        raise ValueError(f"layout: expected 'fused' or 'per_expert', got {layout!r}")
    logical = split_experts(tensors) if layout == "per_expert" else dict(tensors)
    stored = {stored_key(k, prefix): v for k, v in logical.items()}
    stored.update(extra or {})
    if shards == 1:
        write_safetensors(folder / "model.safetensors", stored)
        return folder
    keys = list(stored)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: stored[k] for k in keys[s::shards]}
        write_safetensors(folder / file, part)
        weight_map.update({k: file for k in part})
    index = {"metadata": {"total_size": sum(v.nbytes for v in stored.values())}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def random_model(
    rng: np.random.Generator,
    *,
    layers: int = 2,
    experts: int = 4,
    hidden: int = 32,
    inter: int = 16,
    vocab: int = 64,
) -> dict[str, np.ndarray]:
    """Float64 weights with Qwen3.5-MoE logical names: GDN layers, a full-attention layer every
    fourth, MoE blocks with fused experts and a shared expert, embeddings and lm_head."""
    w = lambda *shape: rng.standard_normal(shape) * 0.05
    t: dict[str, np.ndarray] = {"embed_tokens.weight": w(vocab, hidden), "norm.weight": w(hidden), "lm_head.weight": w(vocab, hidden)}
    for layer in range(layers):
        p = f"layers.{layer}."
        t[p + "input_layernorm.weight"] = w(hidden)
        t[p + "post_attention_layernorm.weight"] = w(hidden)
        if layer % 4 == 3:
            t[p + "self_attn.q_proj.weight"] = w(2 * hidden, hidden)
            t[p + "self_attn.o_proj.weight"] = w(hidden, hidden)
        else:
            t[p + "linear_attn.in_proj_qkv.weight"] = w(3 * hidden, hidden)
            t[p + "linear_attn.out_proj.weight"] = w(hidden, hidden)
            t[p + "linear_attn.A_log"] = w(4)
        t[p + "mlp.gate.weight"] = w(experts, hidden)
        t[p + "mlp.experts.gate_up_proj"] = w(experts, 2 * inter, hidden)
        t[p + "mlp.experts.down_proj"] = w(experts, hidden, inter)
        t[p + "mlp.shared_expert.gate_proj.weight"] = w(inter, hidden)
        t[p + "mlp.shared_expert.up_proj.weight"] = w(inter, hidden)
        t[p + "mlp.shared_expert.down_proj.weight"] = w(hidden, inter)
        t[p + "mlp.shared_expert_gate.weight"] = w(1, hidden)
    return t


def cast(tensors: Mapping[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    """Rounds every tensor to ``dtype`` (``float32``, ``float16`` or ``BF16``); the spec's F32 tensors
    (``A_log``, GDN norm) stay float32 as in real checkpoints."""
    out = {}
    for k, v in tensors.items():
        keep_f32 = k.endswith("linear_attn.A_log") or k.endswith("linear_attn.norm.weight")
        out[k] = np.asarray(v, dtype=np.float32 if keep_f32 else dtype)
    return out
