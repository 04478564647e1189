"""The decode benchmark's checkpoint: a random bf16 Qwen3.5-MoE folder built with numpy only.

`rio-rt bench decode` needs the same weights in rio_rt, transformers and llama.cpp. Real checkpoints
are too big for the benchmark machines, so this builds one with the 35B-A3B layer shapes (spec
section 6: hidden 2048, 256 experts top-8, I 512, shared 512, 16/2 attention heads x 256, Gated
DeltaNet 16/32 heads x 128, conv kernel 4) but only 4 layers (3 GDN + 1 full attention) and a 32k
vocabulary: about 0.63 GB of weights read per decoded token. The folder holds what each system
needs: `config.json` (text-only `qwen3_5_moe_text`), `generation_config.json`, `model.safetensors`
(fused experts, spec section 5 keys under `model.`), and a synthetic byte-level BPE `tokenizer.json`
with the full vocabulary (llama.cpp's converter reads the vocabulary from it).

Deterministic: the same shape and seed give the same bytes. Built once into a cache folder,
written to a temporary folder first and renamed, so an interrupted build leaves nothing half-written.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

#: Bumped whenever the recipe changes, so cached folders of an older recipe are not reused.
RECIPE_VERSION = 1

BF16, F32 = "BF16", "F32"
_ITEM_BYTES = {BF16: 2, F32: 4}
# Rows of random numbers drawn per chunk while writing (bounds the builder's memory to ~100 MB).
_CHUNK_VALUES = 1 << 24

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
# Qwen2/3's pre-tokenizer split (what llama.cpp's `qwen35` pre-tokenizer implements).
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class BenchModelShape:
    """Qwen3.5-MoE text dimensions (config.json names, spec section 6)."""

    name: str
    hidden: int = 2048
    layers: int = 4
    experts: int = 256
    top_k: int = 8
    moe_intermediate: int = 512
    shared_intermediate: int = 512
    heads: int = 16
    kv_heads: int = 2
    head_dim: int = 256
    linear_key_heads: int = 16
    linear_value_heads: int = 32
    linear_key_dim: int = 128
    linear_value_dim: int = 128
    conv_kernel: int = 4
    vocab: int = 32768
    full_attention_interval: int = 4

    def layer_types(self) -> list[str]:
        """Spec section 1: full attention every `full_attention_interval`-th layer."""
        return ["full_attention" if (i + 1) % self.full_attention_interval == 0 else "linear_attention" for i in range(self.layers)]


SHAPES = {
    "35b-a3b-4l": BenchModelShape("35b-a3b-4l"),
    # For tests: same structure (3 GDN + 1 attention, shared expert, several heads per group), tiny.
    "tiny": BenchModelShape(
        "tiny", hidden=64, experts=8, top_k=2, moe_intermediate=32, shared_intermediate=32, heads=4, kv_heads=2,
        head_dim=32, linear_key_heads=2, linear_value_heads=4, linear_key_dim=16, linear_value_dim=16, vocab=512,
    ),
}
DEFAULT_SHAPE = "35b-a3b-4l"


@dataclass(frozen=True)
class TensorSpec:
    """One stored tensor and how it is drawn: normal(mean, std) rounded to `dtype`, or, with
    `log_uniform`, log(uniform(1, 16)) (the A_log init of transformers)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = BF16
    std: float = 0.02
    mean: float = 0.0
    log_uniform: bool = False

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * _ITEM_BYTES[self.dtype]


def tensor_specs(shape: BenchModelShape) -> list[TensorSpec]:
    """Every tensor of the checkpoint, in file order (spec section 5 keys and shapes, `model.` prefix).

    Scales: projections and the router at transformers' init std 0.02 (router logits then spread
    over all experts, so top-8 routing varies from token to token), RMSNorm1p weights 0 (1 + w = 1),
    the GDN gated norm 1, dt_bias 1, A_log as transformers initialises it."""
    h = shape.hidden
    key_dim = shape.linear_key_heads * shape.linear_key_dim
    value_dim = shape.linear_value_heads * shape.linear_value_dim
    conv_dim = 2 * key_dim + value_dim
    specs = [TensorSpec("model.embed_tokens.weight", (shape.vocab, h))]
    for layer, kind in enumerate(shape.layer_types()):
        p = f"model.layers.{layer}."
        specs += [
            TensorSpec(p + "input_layernorm.weight", (h,), std=0.0),
            TensorSpec(p + "post_attention_layernorm.weight", (h,), std=0.0),
        ]
        if kind == "linear_attention":
            a = p + "linear_attn."
            specs += [
                TensorSpec(a + "in_proj_qkv.weight", (conv_dim, h)),
                TensorSpec(a + "in_proj_z.weight", (value_dim, h)),
                TensorSpec(a + "in_proj_b.weight", (shape.linear_value_heads, h)),
                TensorSpec(a + "in_proj_a.weight", (shape.linear_value_heads, h)),
                TensorSpec(a + "conv1d.weight", (conv_dim, 1, shape.conv_kernel), std=0.2),
                TensorSpec(a + "A_log", (shape.linear_value_heads,), dtype=F32, log_uniform=True),
                TensorSpec(a + "dt_bias", (shape.linear_value_heads,), std=0.0, mean=1.0),
                TensorSpec(a + "norm.weight", (shape.linear_value_dim,), dtype=F32, std=0.0, mean=1.0),
                TensorSpec(a + "out_proj.weight", (h, value_dim)),
            ]
        else:
            a = p + "self_attn."
            q_dim = shape.heads * shape.head_dim
            kv_dim = shape.kv_heads * shape.head_dim
            specs += [
                TensorSpec(a + "q_proj.weight", (2 * q_dim, h)),  # query and output gate (spec section 2)
                TensorSpec(a + "k_proj.weight", (kv_dim, h)),
                TensorSpec(a + "v_proj.weight", (kv_dim, h)),
                TensorSpec(a + "o_proj.weight", (h, q_dim)),
                TensorSpec(a + "q_norm.weight", (shape.head_dim,), std=0.0),
                TensorSpec(a + "k_norm.weight", (shape.head_dim,), std=0.0),
            ]
        m = p + "mlp."
        specs += [
            TensorSpec(m + "gate.weight", (shape.experts, h)),
            TensorSpec(m + "experts.gate_up_proj", (shape.experts, 2 * shape.moe_intermediate, h)),
            TensorSpec(m + "experts.down_proj", (shape.experts, h, shape.moe_intermediate)),
            TensorSpec(m + "shared_expert.gate_proj.weight", (shape.shared_intermediate, h)),
            TensorSpec(m + "shared_expert.up_proj.weight", (shape.shared_intermediate, h)),
            TensorSpec(m + "shared_expert.down_proj.weight", (h, shape.shared_intermediate)),
            TensorSpec(m + "shared_expert_gate.weight", (1, h)),
        ]
    specs += [TensorSpec("model.norm.weight", (h,), std=0.0), TensorSpec("lm_head.weight", (shape.vocab, h))]
    return specs


def checkpoint_bytes(shape: BenchModelShape) -> int:
    """Bytes of all the tensors."""
    return sum(s.nbytes for s in tensor_specs(shape))


def bytes_per_decoded_token(shape: BenchModelShape) -> int:
    """Weight bytes one batch-1 decode step reads (spec section 7's accounting): every dense
    tensor once, the routed experts' share top_k / experts of the expert tensors, one embedding
    row; the recurrent and KV state traffic is not counted (a few MB at these lengths)."""
    total = 0
    for s in tensor_specs(shape):
        if s.name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            total += s.nbytes * shape.top_k // shape.experts
        elif s.name.endswith("embed_tokens.weight"):
            total += s.nbytes // shape.vocab
        else:
            total += s.nbytes
    return total


def config_json(shape: BenchModelShape) -> dict:
    """A text-only `qwen3_5_moe_text` config, in the fields transformers 5.23 writes."""
    return {
        "architectures": ["Qwen3_5MoeForCausalLM"],
        "model_type": "qwen3_5_moe_text",
        "dtype": "bfloat16",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": None,
        "eos_token_id": shape.vocab - len(SPECIAL_TOKENS),  # <|endoftext|>
        "pad_token_id": None,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "layer_types": shape.layer_types(),
        "full_attention_interval": shape.full_attention_interval,
        "linear_conv_kernel_dim": shape.conv_kernel,
        "linear_key_head_dim": shape.linear_key_dim,
        "linear_num_key_heads": shape.linear_key_heads,
        "linear_num_value_heads": shape.linear_value_heads,
        "linear_value_head_dim": shape.linear_value_dim,
        "max_position_embeddings": 32768,
        "moe_intermediate_size": shape.moe_intermediate,
        "num_attention_heads": shape.heads,
        "num_experts": shape.experts,
        "num_experts_per_tok": shape.top_k,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e7,
            "partial_rotary_factor": 0.25,
            "mrope_section": _mrope_section(shape.head_dim),
            "mrope_interleaved": True,
        },
        "shared_expert_intermediate_size": shape.shared_intermediate,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": shape.vocab,
    }


def _mrope_section(head_dim: int) -> list[int]:
    """The 35B's [11, 11, 10] for head_dim 256 (64 rotary dims = 32 pairs), scaled to other sizes."""
    pairs = head_dim // 8
    t = h = (pairs * 11 + 16) // 32
    return [t, h, pairs - t - h]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: every byte as a printable character (what ByteLevel uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def tokenizer_json(vocab_size: int, seed: int) -> dict:
    """A byte-level BPE `tokenizer.json` with exactly `vocab_size` ids: 256 byte tokens, merges of
    two existing tokens (drawn from a seeded RNG, short pieces preferred) and the Qwen special
    tokens last. Its words are meaningless; it exists so every system sees a complete vocabulary
    with Qwen's pre-tokenizer."""
    n_merges = vocab_size - 256 - len(SPECIAL_TOKENS)
    if n_merges < 0:
        raise ValueError(f"vocab_size: needs at least {256 + len(SPECIAL_TOKENS)} ids, got {vocab_size}")
    alphabet = _bytes_to_unicode()
    tokens = [alphabet[b] for b in range(256)]
    seen = set(tokens)
    # Letters and the space marker are the common pieces; merges start from them.
    letters = [alphabet[b] for b in b" abcdefghijklmnopqrstuvwxyzetaoinshr"]
    rng = np.random.default_rng([seed, 7])
    merges: list[str] = []
    while len(merges) < n_merges:
        pool = tokens[256:] if len(tokens) > 512 and rng.random() < 0.7 else letters
        a = pool[int(rng.integers(len(pool)))]
        b = tokens[256 + int(rng.integers(len(tokens) - 256))] if len(tokens) > 256 and rng.random() < 0.5 else letters[int(rng.integers(len(letters)))]
        if len(a) + len(b) > 12 or a + b in seen:
            continue
        seen.add(a + b)
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    special = [
        {"id": len(tokens) + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": _QWEN_SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,
        },
    }


def _tokenizer_config() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 32768,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
    }


def _random_chunks(spec: TensorSpec, rng: np.random.Generator) -> Iterator[bytes]:
    """The tensor's bytes, in row-major chunks of at most `_CHUNK_VALUES` values."""
    count = int(np.prod(spec.shape))
    for start in range(0, count, _CHUNK_VALUES):
        n = min(_CHUNK_VALUES, count - start)
        if spec.log_uniform:
            values = np.log(rng.uniform(1.0, 16.0, n)).astype(np.float32)
        elif spec.std == 0.0:
            values = np.full(n, spec.mean, dtype=np.float32)
        else:
            values = rng.standard_normal(n, dtype=np.float32)
            values *= np.float32(spec.std)
            values += np.float32(spec.mean)
        yield values.tobytes() if spec.dtype == F32 else _round_to_bf16(values).tobytes()


def _round_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even (no NaN/inf in random normals)."""
    bits = values.view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def write_safetensors(path: Path, specs: list[TensorSpec], seed: int, on_tensor: Callable[[int, int], None] | None = None) -> None:
    """Streams the random tensors into one safetensors file; `on_tensor(bytes_done, bytes_total)`
    is called after each tensor. Tensor i draws from `default_rng([seed, i])`, so any one tensor
    is reproducible on its own."""
    header: dict = {"__metadata__": {"format": "pt", "rio_rt_bench_recipe": str(RECIPE_VERSION)}}
    offset = 0
    for s in specs:
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    done = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for i, s in enumerate(specs):
            rng = np.random.default_rng([seed, i])
            for chunk in _random_chunks(s, rng):
                f.write(chunk)
            done += s.nbytes
            if on_tensor is not None:
                on_tensor(done, offset)


def checkpoint_dir_name(shape: BenchModelShape, seed: int) -> str:
    return f"qwen35moe-{shape.name}-seed{seed}-r{RECIPE_VERSION}"


def build_checkpoint(folder: Path, shape: BenchModelShape, seed: int = 0, on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Writes the checkpoint folder (atomically: into `folder`.tmp-PID, then renamed)."""
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "config.json").write_text(json.dumps(config_json(shape), indent=2))
        eos = shape.vocab - len(SPECIAL_TOKENS)
        (tmp / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, eos + 2], "do_sample": False}, indent=2))
        (tmp / "tokenizer.json").write_text(json.dumps(tokenizer_json(shape.vocab, seed), ensure_ascii=False))
        (tmp / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(), indent=2))
        (tmp / "bench_recipe.json").write_text(json.dumps({"recipe": RECIPE_VERSION, "seed": seed, "shape": asdict(shape)}, indent=2))
        write_safetensors(tmp / "model.safetensors", tensor_specs(shape), seed, on_progress)
        if folder.exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def ensure_checkpoint(cache_dir: Path, shape_name: str = DEFAULT_SHAPE, seed: int = 0, on_progress: Callable[[int, int], None] | None = None) -> Path:
    """The cached checkpoint folder for (`shape_name`, `seed`) under `cache_dir`, built if absent."""
    if shape_name not in SHAPES:
        raise ValueError(f"shape: expected one of {', '.join(SHAPES)}, got {shape_name!r}")
    shape = SHAPES[shape_name]
    folder = Path(cache_dir) / checkpoint_dir_name(shape, seed)
    if (folder / "model.safetensors").is_file():
        return folder
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return build_checkpoint(folder, shape, seed, on_progress)
