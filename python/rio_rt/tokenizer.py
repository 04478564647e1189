"""Tokenizers and chat templates of checkpoint folders.

``tokenizer.json`` is run by the Rust ``tokenizers`` crate (the library behind the Python
``tokenizers`` package: same ids, same text), the chat template by minijinja in the environment
transformers gives chat templates (``trim_blocks``, ``lstrip_blocks``, Python string methods,
``raise_exception``, Python's ``json.dumps`` as ``tojson``). No Python dependency is needed.
"""
from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional, Sequence, Union

from rio_rt import _rio_rt

__all__ = ["IncrementalDecoder", "Tokenizer"]

IncrementalDecoder = _rio_rt.IncrementalDecoder

#: One chat message: ``{"role": ..., "content": ...}``, optionally ``reasoning_content``, ``tool_calls``, ...
Message = Mapping[str, Any]


class Tokenizer:
    """A checkpoint's tokenizer: ``tokenizer.json``, the special tokens of
    ``tokenizer_config.json`` and the chat template (``chat_template.jinja``, else
    ``tokenizer_config.json``'s ``chat_template``)."""

    def __init__(self, native: "_rio_rt.Tokenizer") -> None:
        self._native = native

    @classmethod
    def from_pretrained(cls, path: Union[str, "os.PathLike[str]"]) -> "Tokenizer":
        """Loads the tokenizer of a checkpoint folder. Raises ``CheckpointError`` when the folder
        has no ``tokenizer.json`` or it is broken, ``ConfigError`` for a broken
        ``tokenizer_config.json`` or chat template (each names the file)."""
        tokenizer = cls.from_dir(path)
        if tokenizer is None:
            raise _rio_rt.CheckpointError(f"checkpoint {os.fspath(path)}: no tokenizer.json in this folder")
        return tokenizer

    @classmethod
    def from_dir(cls, path: Union[str, "os.PathLike[str]"]) -> Optional["Tokenizer"]:
        """Like ``from_pretrained``, but None when the folder has no ``tokenizer.json``."""
        native = _rio_rt.Tokenizer.from_dir(os.fspath(path))
        return None if native is None else cls(native)

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """Token ids of ``text``. ``add_special_tokens`` runs the tokenizer's post-processor
        (a BOS token for tokenizers that add one; Qwen's adds nothing), as ``tokenizers`` does."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        return self._native.encode(text, add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of ``ids`` (a sequence of ints or an integer array). Ids outside the
        vocabulary are skipped, as ``tokenizers`` does (embedding tables are often padded)."""
        return self._native.decode(ids, skip_special_tokens)

    def decoder(self, skip_special_tokens: bool = False) -> IncrementalDecoder:
        """A streaming decoder: ``push(id)`` returns the text that id completes (never half a
        character); ``finish()`` returns what is held back at the end. The pieces concatenated
        equal ``decode`` of all the ids."""
        return self._native.decoder(skip_special_tokens)

    def token_to_id(self, token: str) -> Optional[int]:
        return self._native.token_to_id(token)

    def id_to_token(self, id: int) -> Optional[str]:
        return self._native.id_to_token(id)

    def is_special(self, id: int) -> bool:
        """Whether ``id`` is a special token (dropped by ``decode(..., skip_special_tokens=True)``)."""
        return self._native.is_special(id)

    @property
    def vocab_size(self) -> int:
        """Tokens including added ones (``len(tokenizer)`` in transformers)."""
        return self._native.vocab_size

    def __len__(self) -> int:
        return self._native.vocab_size

    @property
    def path(self) -> str:
        return os.fspath(self._native.path)

    @property
    def bos_token(self) -> Optional[str]:
        return self._native.bos_token

    @property
    def eos_token(self) -> Optional[str]:
        return self._native.eos_token

    @property
    def pad_token(self) -> Optional[str]:
        return self._native.pad_token

    @property
    def unk_token(self) -> Optional[str]:
        return self._native.unk_token

    @property
    def bos_token_id(self) -> Optional[int]:
        return self._native.bos_token_id

    @property
    def eos_token_id(self) -> Optional[int]:
        return self._native.eos_token_id

    @property
    def pad_token_id(self) -> Optional[int]:
        return self._native.pad_token_id

    @property
    def unk_token_id(self) -> Optional[int]:
        return self._native.unk_token_id

    @property
    def think_token_id(self) -> Optional[int]:
        """Id of ``<think>`` (opens a reasoning block), None when the vocabulary lacks it."""
        return self._native.think_token_id

    @property
    def end_think_token_id(self) -> Optional[int]:
        """Id of ``</think>``, None when the vocabulary lacks it."""
        return self._native.end_think_token_id

    @property
    def chat_template(self) -> Optional[str]:
        """The chat template's Jinja source, None without one."""
        return self._native.chat_template

    def apply_chat_template(self, messages: Sequence[Message], *, add_generation_prompt: bool = False,
                            enable_thinking: Optional[bool] = None, tokenize: bool = False,
                            **kwargs: Any) -> Union[str, List[int]]:
        """Renders a conversation as transformers' ``apply_chat_template`` does.

        ``messages``: dicts with ``role`` and ``content`` (and ``reasoning_content``,
        ``tool_calls``, ... as the template reads them; keys set to None are dropped).
        ``add_generation_prompt`` opens an assistant turn. ``enable_thinking`` is Qwen3/Qwen3.5's
        switch (False: the template closes an empty ``<think></think>`` block so the model answers
        directly; None: the template's default). Other keyword arguments become template
        variables (``tools``, ``documents``, ...). ``tokenize=True`` returns token ids (encoded
        without adding special tokens, as transformers does) instead of the text. A template
        that rejects the conversation (``raise_exception``) raises ValueError.
        """
        if enable_thinking is not None and not isinstance(enable_thinking, bool):
            raise TypeError(f"enable_thinking: expected a bool or None, got {type(enable_thinking).__name__}")
        text = self._native.apply_chat_template(messages, bool(add_generation_prompt), enable_thinking, **kwargs)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def __repr__(self) -> str:
        return repr(self._native)


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int, *, min_frequency: int = 2,
                        added_tokens: Sequence[tuple] = ()) -> str:
    """Trains a Qwen-style byte-level BPE tokenizer on ``texts`` with the Rust ``tokenizers``
    crate's BpeTrainer (NFC, Qwen's split regex, every byte in the alphabet) and returns its
    ``tokenizer.json`` text. ``added_tokens``: ``(text, special)`` pairs given the ids after the
    learned vocabulary, in order. Deterministic: the same inputs give the same file."""
    return _rio_rt.train_bpe_tokenizer(list(texts), int(vocab_size), int(min_frequency),
                                       [(str(t), bool(s)) for t, s in added_tokens])
