"""Qwen3.5-MoE and Qwen3-MoE models on the Rust CPU backend.

This first slice runs the f32 forward pass: bf16/f16 checkpoints are upcast to float32 when
loaded. ``Model.forward`` returns logits for research use; generation comes later.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Union

import numpy as np

from rio_rt import _rio_rt

#: A numpy array or a CPU torch tensor.
Array = Any

__all__ = ["Model", "ModelCache"]

ModelCache = _rio_rt.ModelCache


class Model:
    """A MoE text model: Qwen3.5-MoE (``qwen3_5_moe`` / ``qwen3_5_moe_text`` checkpoints) or
    Qwen3-MoE (``qwen3_moe``), picked by ``config.json``'s ``model_type``."""

    def __init__(self, native: "_rio_rt.Model") -> None:
        self._native = native

    @classmethod
    def from_pretrained(cls, path: Union[str, "os.PathLike[str]"]) -> "Model":
        """Loads a Hugging Face checkpoint folder: ``config.json`` and ``model.safetensors`` (or a
        sharded index), with either key prefix and either expert layout; vision and MTP tensors
        are skipped. The architecture follows ``model_type``; an unknown one raises ``ConfigError``
        naming it, as do bad fields (``CheckpointError`` for bad weights)."""
        return cls(_rio_rt.Model.load(os.fspath(path)))

    @property
    def model_type(self) -> str:
        """``"qwen3_5_moe"`` or ``"qwen3_moe"``."""
        return self._native.model_type

    @property
    def vocab_size(self) -> int:
        return self._native.vocab_size

    @property
    def hidden_size(self) -> int:
        return self._native.hidden_size

    @property
    def num_layers(self) -> int:
        return self._native.num_layers

    @property
    def eos_token_ids(self) -> List[int]:
        """Stop tokens: ``generation_config.json``'s, then ``config.json``'s."""
        return self._native.eos_token_ids

    def new_cache(self) -> ModelCache:
        """An empty per-sequence cache (KV caches, and Gated DeltaNet states for Qwen3.5-MoE)."""
        return self._native.new_cache()

    def forward(self, ids: Optional[Array] = None, *, input_embeds: Optional[Array] = None,
                cache: Optional[ModelCache] = None, logits_to_keep: int = 0) -> Array:
        """Logits of every input position, float32, numpy or torch like the input.

        ``ids``: int token ids ``(T,)`` or ``(B, T)`` (a list is taken as int64); or ``input_embeds``: float32 ``(T, H)`` or
        ``(B, T, H)``, used in place of the embedding lookup. With ``cache`` (one sequence only)
        the tokens continue the sequence the cache holds, and the cache is updated. Returns
        ``(T, V)`` or ``(B, T, V)``; with ``logits_to_keep=n > 0`` only the last n positions
        (lm_head runs only for them), as in transformers.
        """
        if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise ValueError(f"logits_to_keep: expected an int >= 0, got {logits_to_keep!r}")
        if isinstance(ids, (list, tuple)):
            ids = np.asarray(ids, dtype=np.int64)
        if isinstance(input_embeds, (list, tuple)):
            input_embeds = np.asarray(input_embeds, dtype=np.float32)
        return self._native.forward(ids, input_embeds=input_embeds, cache=cache, logits_to_keep=logits_to_keep)

    __call__ = forward
