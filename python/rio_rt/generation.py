"""Sampling parameters, generation results and per-step events.

``SamplingParams`` mirrors the Rust sampler (rust/rio-generate/src/sampling.rs). The processors
follow transformers and vLLM, in transformers' order: repetition penalty (HF semantics, over
prompt and output tokens), presence/frequency penalties (OpenAI semantics, output tokens only),
temperature, top-k, top-p, min-p (relative to the most likely token). ``temperature=0`` is
greedy decoding (ties to the lower token id).

Log-probs are natural logs of the distribution each token was drawn from (after filtering and
renormalisation); under greedy decoding they are the log-softmax of the penalised, untempered
logits (what vLLM reports).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["GenerationEvent", "GenerationResult", "SamplingParams", "split_stop"]


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value}")
    return value


def _count(name: str, value: Any, minimum: int) -> int:
    if not _is_int(value):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def split_stop(stop: Union[None, int, str, Sequence[Union[int, str]]]) -> Tuple[Tuple[int, ...], Tuple[str, ...]]:
    """Splits ``stop`` (token ids and/or strings, or one of them) into (ids, strings)."""
    if stop is None:
        return (), ()
    items = [stop] if isinstance(stop, (str, numbers.Integral)) else list(stop)
    ids = tuple(int(s) for s in items if _is_int(s))
    strings = tuple(s for s in items if isinstance(s, str))
    if len(ids) + len(strings) != len(items):
        bad = next(s for s in items if not (_is_int(s) or isinstance(s, str)))
        raise TypeError(f"stop: expected token ids (int) and/or strings, got {type(bad).__name__}")
    return ids, strings


@dataclass(frozen=True)
class SamplingParams:
    """How a sequence picks its tokens and when it stops. The defaults are greedy decoding of up
    to 64 tokens; ``Model.generate`` fills unspecified values from the checkpoint's
    ``generation_config.json`` instead (see its docstring)."""

    #: 0 = greedy; otherwise the logits are divided by it.
    temperature: float = 0.0
    #: Keep the ``top_k`` most likely tokens (0 = all; ties with the k-th are kept, as HF).
    top_k: int = 0
    #: Keep the smallest most-likely set whose probability reaches ``top_p``, in (0, 1].
    top_p: float = 1.0
    #: Drop tokens less likely than ``min_p`` times the most likely one, in [0, 1].
    min_p: float = 0.0
    #: HF repetition penalty over prompt and output tokens (> 0; 1 = off).
    repetition_penalty: float = 1.0
    #: OpenAI presence penalty: subtracted once from every token already in the output.
    presence_penalty: float = 0.0
    #: OpenAI frequency penalty: subtracted per occurrence in the output.
    frequency_penalty: float = 0.0
    #: The most tokens generated (>= 1).
    max_new_tokens: int = 64
    #: Token ids that end the sequence (recorded in ``token_ids``, as EOS is).
    stop_token_ids: Tuple[int, ...] = ()
    #: Strings that end the sequence; cut, with what follows, from the text. Needs a tokenizer.
    stop_strings: Tuple[str, ...] = ()
    #: RNG seed (same seed, same tokens); None draws one from the OS.
    seed: Optional[int] = None
    #: Per step, report this many most likely alternatives with their logprobs (0 = none).
    logprobs: int = 0
    #: Keep generating past EOS tokens.
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "temperature", _number("temperature", self.temperature))
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0 (0 = greedy), got {self.temperature}")
        set_(self, "top_k", _count("top_k", self.top_k, 0))
        set_(self, "top_p", _number("top_p", self.top_p))
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        set_(self, "min_p", _number("min_p", self.min_p))
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p: must be in [0, 1], got {self.min_p}")
        set_(self, "repetition_penalty", _number("repetition_penalty", self.repetition_penalty))
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty: must be > 0 (1 = off), got {self.repetition_penalty}")
        set_(self, "presence_penalty", _number("presence_penalty", self.presence_penalty))
        set_(self, "frequency_penalty", _number("frequency_penalty", self.frequency_penalty))
        set_(self, "max_new_tokens", _count("max_new_tokens", self.max_new_tokens, 1))
        ids = (self.stop_token_ids,) if _is_int(self.stop_token_ids) else tuple(self.stop_token_ids)
        for t in ids:
            if not _is_int(t):
                raise TypeError(f"stop_token_ids: expected ints, got {type(t).__name__}")
            if t < 0:
                raise ValueError(f"stop_token_ids: token ids are >= 0, got {t}")
        set_(self, "stop_token_ids", tuple(int(t) for t in ids))
        strings = (self.stop_strings,) if isinstance(self.stop_strings, str) else tuple(self.stop_strings)
        for s in strings:
            if not isinstance(s, str):
                raise TypeError(f"stop_strings: expected strings, got {type(s).__name__}")
            if not s:
                raise ValueError("stop_strings: an empty stop string would stop at once")
        set_(self, "stop_strings", strings)
        if self.seed is not None:
            if not _is_int(self.seed):
                raise TypeError(f"seed: expected an int or None, got {type(self.seed).__name__}")
            if not 0 <= self.seed < 2**64:
                raise ValueError(f"seed: must be in [0, 2**64), got {self.seed}")
            set_(self, "seed", int(self.seed))
        set_(self, "logprobs", _count("logprobs", self.logprobs, 0))
        if not isinstance(self.ignore_eos, bool):
            raise TypeError(f"ignore_eos: expected a bool, got {type(self.ignore_eos).__name__}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    def _native(self, seed_offset: int = 0) -> Dict[str, Any]:
        """The dict the native ``generate`` reads; ``seed_offset`` is the prompt's batch index."""
        seed = None if self.seed is None else (self.seed + seed_offset) % 2**64
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "max_new_tokens": self.max_new_tokens,
            "stop_token_ids": list(self.stop_token_ids),
            "stop_strings": list(self.stop_strings),
            "seed": seed,
            "logprobs": self.logprobs,
            "ignore_eos": self.ignore_eos,
        }


@dataclass(frozen=True)
class GenerationEvent:
    """One generated token of one prompt, as ``stream``/``callback`` see it."""

    #: The prompt's index in the call (0 for a single prompt).
    index: int
    #: 0 for the first generated token, then 1, 2, ...
    step: int
    token_id: int
    logprob: float
    #: New text since this prompt's previous event (None without a tokenizer). Text that could
    #: still turn into a stop string is held back; the deltas add up to the result's text.
    text: Optional[str]
    #: Set on the prompt's last event: "eos", "stop_token", "stop_string", "length", "budget".
    finish_reason: Optional[str]
    #: "explicit" or "latent": the mode the next step runs in.
    mode: str
    #: The step's reasoning trace row (a dict) in reasoning runs, else None.
    trace: Optional[Dict[str, Any]] = None


@dataclass
class GenerationResult:
    """What one prompt produced."""

    #: Generated token ids (an EOS or stop token that ended the sequence included).
    token_ids: List[int]
    #: The decoded text (special tokens skipped, stop string cut); None without a tokenizer.
    text: Optional[str]
    #: "eos", "stop_token", "stop_string", "length", "budget" (reasoning answer budget) or
    #: "callback" (stopped by the per-step callback).
    finish_reason: str
    #: Natural-log probability of each generated token (see the module docstring).
    logprobs: List[float]
    #: Per step, the ``logprobs`` most likely ``(token_id, logprob)`` pairs (empty when 0).
    top_logprobs: List[List[Tuple[int, float]]] = field(default_factory=list)
    #: The reasoning trace (``trace=True`` with ``reasoning=``), else None.
    trace: Any = None
