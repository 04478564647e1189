"""``rio-rt info``: what a checkpoint folder holds, from ``config.json`` and the safetensors
headers only (no weight is read: instant even for an 800 GB checkpoint).

Parameters read per decoded token (batch 1) count every text tensor in full except the routed
experts (``num_experts_per_tok`` of ``num_experts`` per layer) and the embedding table (one row;
the whole table when it doubles as the untied-away lm_head). Bytes per decoded token are those
parameters at their stored dtype: the weight traffic a decode step cannot avoid (spec section 7).
Vision-tower and MTP tensors are counted apart: text decoding never reads them. A folder with a
config but no weights is counted from the tensor shapes the config implies (spec section 5), in
bf16 with ``A_log`` and the Gated DeltaNet norm in f32, as the official releases store them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Union

from rio_rt import _rio_rt

__all__ = ["CheckpointInfo", "TensorGroup", "add_parser", "checkpoint_info"]

#: Bytes per element of the safetensors dtypes.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}

#: Table order of the tensor groups (spec section 7's rows).
GROUP_ORDER = ("routed experts", "router", "shared expert", "dense mlp", "linear attention", "full attention",
               "norms", "lm_head", "embedding", "other")


@dataclass(frozen=True)
class TensorGroup:
    """The tensors of one kind: all of them, and what one decoded token reads."""

    params: int
    bytes: int
    active_params: int
    active_bytes: int


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    model_type: str
    #: Per decoder layer: "linear_attention" (Gated DeltaNet) or "full_attention".
    layer_types: List[str]
    #: Config dimensions (hidden_size, heads, experts, ...).
    dims: Dict[str, int]
    tie_word_embeddings: bool
    #: Stop tokens: generation_config.json's, else config.json's.
    eos_token_ids: List[int]
    #: "headers" (the safetensors headers) or "config" (no weights in the folder: the shapes the config implies).
    counted_from: str
    #: Tensor groups by name.
    groups: Dict[str, TensorGroup] = field(default_factory=dict)
    #: Parameters per stored dtype (text tensors and skipped ones).
    dtype_params: Dict[str, int] = field(default_factory=dict)
    #: Vision/MTP parameters and tensors, which text decoding skips.
    skipped_params: int = 0
    skipped_tensors: int = 0
    shards: int = 0
    file_bytes: int = 0
    #: KV-cache elements per context token and the per-sequence Gated DeltaNet states (elements).
    kv_cache_elements_per_token: int = 0
    linear_state_elements: int = 0
    conv_state_elements: int = 0
    #: ``{"vocab_size", "chat_template", "eos_token", "think_token_id", "end_think_token_id"}`` or None.
    tokenizer: Optional[Dict[str, Any]] = None

    @property
    def params_total(self) -> int:
        """Text parameters (vision and MTP excluded)."""
        return sum(g.params for g in self.groups.values())

    @property
    def params_active(self) -> int:
        """Parameters one decoded token reads (batch 1)."""
        return sum(g.active_params for g in self.groups.values())

    @property
    def bytes_total(self) -> int:
        return sum(g.bytes for g in self.groups.values())

    @property
    def bytes_per_token(self) -> int:
        """Weight bytes one decoded token reads at the stored dtype (batch 1)."""
        return sum(g.active_bytes for g in self.groups.values())

    @property
    def main_dtype(self) -> Optional[str]:
        """The stored dtype holding most parameters."""
        return max(self.dtype_params, key=self.dtype_params.__getitem__) if self.dtype_params else None

    @property
    def kv_cache_bytes_per_token(self) -> int:
        """KV cache per context token at the main stored dtype."""
        return self.kv_cache_elements_per_token * DTYPE_BYTES.get(self.main_dtype or "BF16", 2)

    @property
    def linear_state_bytes(self) -> int:
        """Gated DeltaNet recurrent state per sequence (fp32, as transformers keeps it) plus its
        causal-conv state at the main stored dtype."""
        return self.linear_state_elements * 4 + self.conv_state_elements * DTYPE_BYTES.get(self.main_dtype or "BF16", 2)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for name in ("params_total", "params_active", "bytes_total", "bytes_per_token", "main_dtype",
                     "kv_cache_bytes_per_token", "linear_state_bytes"):
            d[name] = getattr(self, name)
        return d

    def format(self) -> str:
        """A human-readable report."""
        d = self.dims
        n_linear = self.layer_types.count("linear_attention")
        n_full = self.layer_types.count("full_attention")
        mix = f"{n_linear} Gated DeltaNet + {n_full} full attention" if n_linear else f"{n_full} attention"
        lines = [f"{self.path}: {self.model_type}, {len(self.layer_types)} layers ({mix})",
                 f"  hidden {d['hidden_size']}, vocab {d['vocab_size']}, attention {d['num_attention_heads']}/"
                 f"{d['num_key_value_heads']} heads x {d['head_dim']}"
                 + (f" (rotary {d['rotary_dim']})" if "rotary_dim" in d else "")]
        if n_linear:
            lines.append(f"  Gated DeltaNet {d['linear_num_key_heads']}/{d['linear_num_value_heads']} heads x "
                         f"{d['linear_key_head_dim']}/{d['linear_value_head_dim']}, conv {d['linear_conv_kernel_dim']}")
        shared = d.get("shared_expert_intermediate_size")
        lines.append(f"  MoE: {d['num_experts']} experts, top-{d['num_experts_per_tok']}, intermediate "
                     f"{d['moe_intermediate_size']}" + (f", shared expert {shared}" if shared else ""))
        dtypes = ", ".join(f"{k} {_count(v)}" for k, v in sorted(self.dtype_params.items(), key=lambda kv: -kv[1]))
        if self.counted_from == "config":
            lines.append("weights: none in this folder; counted from the shapes config.json implies, in bf16 "
                         f"(A_log and the Gated DeltaNet norm in f32): {dtypes}")
        else:
            lines.append(f"weights: {self.shards} shard(s), {_bytes(self.file_bytes)} on disk; parameters by dtype: {dtypes}")
        skipped = f" (+{_count(self.skipped_params)} vision/MTP, skipped)" if self.skipped_tensors else ""
        lines.append(f"  parameters: {_count(self.params_total)} text{skipped}; "
                     f"{_count(self.params_active)} read per decoded token")
        lines.append(f"  bytes read per decoded token (batch 1, stored dtype): {_bytes(self.bytes_per_token)}")
        rows = [("group", "params", "per token", "bytes/token")]
        for name in sorted(self.groups, key=lambda n: GROUP_ORDER.index(n) if n in GROUP_ORDER else len(GROUP_ORDER)):
            g = self.groups[name]
            rows.append((name, _count(g.params), _count(g.active_params), _bytes(g.active_bytes)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            lines.append("    " + r[0].ljust(widths[0]) + "  " + "  ".join(c.rjust(w) for c, w in zip(r[1:], widths[1:])))
        state = f"state: KV cache {_bytes(self.kv_cache_bytes_per_token)} per context token"
        if self.linear_state_elements:
            state += f"; Gated DeltaNet state {_bytes(self.linear_state_bytes)} per sequence"
        lines.append(state)
        if self.tokenizer is None:
            lines.append("tokenizer: none (no tokenizer.json)")
        else:
            t = self.tokenizer
            think = (f", <think>/</think> = {t['think_token_id']}/{t['end_think_token_id']}"
                     if t["think_token_id"] is not None else "")
            lines.append(f"tokenizer: {t['vocab_size']} tokens, chat template {'yes' if t['chat_template'] else 'no'}, "
                         f"eos_token {t['eos_token']!r}{think}")
        lines.append(f"eos token ids: {self.eos_token_ids}")
        return "\n".join(lines)


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def checkpoint_info(path: Union[str, "os.PathLike[str]"]) -> CheckpointInfo:
    """Describes a checkpoint folder from its config and safetensors headers (no weights read),
    or from the config alone when the folder holds no weights. Raises ``ConfigError`` /
    ``CheckpointError`` naming a bad file."""
    raw = _rio_rt.checkpoint_info(os.fspath(path))
    raw["groups"] = {name: TensorGroup(**g) for name, g in raw["groups"].items()}
    return CheckpointInfo(**raw)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="architecture, parameter counts and bytes per decoded token of a checkpoint",
                       description="Describe a checkpoint folder from its config and safetensors headers (no weights "
                                   "are read): architecture, layer types, dimensions, experts, parameters (total and "
                                   "per decoded token), weight bytes read per decoded token, tokenizer, EOS ids.")
    p.add_argument("path", metavar="DIR", help="checkpoint folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from rio_rt import RioError

    try:
        info = checkpoint_info(args.path)
    except (RioError, ValueError, OSError) as e:
        print(f"rio-rt info: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info.to_dict(), indent=1) if args.json else info.format())
    return 0
