"""Qwen3.5-MoE and Qwen3-MoE models on the Rust CPU backend.

This first slice runs the f32 forward pass: bf16/f16 checkpoints are upcast to float32 when
loaded. ``Model.forward`` returns logits for research use; ``Model.generate`` / ``Model.stream``
run the Rust decode loop (sampling, batches, stop conditions, latent reasoning).
"""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from rio_rt import _rio_rt
from rio_rt.generation import GenerationEvent, GenerationResult, SamplingParams, split_stop
from rio_rt.tokenizer import Tokenizer

#: A numpy array or a CPU torch tensor.
Array = Any

__all__ = ["Model", "ModelCache"]

ModelCache = _rio_rt.ModelCache


class Model:
    """A MoE text model: Qwen3.5-MoE (``qwen3_5_moe`` / ``qwen3_5_moe_text`` checkpoints) or
    Qwen3-MoE (``qwen3_moe``), picked by ``config.json``'s ``model_type``."""

    def __init__(self, native: "_rio_rt.Model", path: Optional[str] = None) -> None:
        self._native = native
        self._path = path
        self._tokenizer: Optional[Tokenizer] = None
        self._tokenizer_loaded = False

    @classmethod
    def from_pretrained(cls, path: Union[str, "os.PathLike[str]"], dtype: str = "auto",
                        threads: Optional[int] = None) -> "Model":
        """Loads a Hugging Face checkpoint folder: ``config.json`` and ``model.safetensors`` (or a
        sharded index), with either key prefix and either expert layout; vision and MTP tensors
        are skipped. The architecture follows ``model_type``; an unknown one raises ``ConfigError``
        naming it, as do bad fields (``CheckpointError`` for bad weights).

        Weights are read in place from the memory-mapped files: loading reads only headers, and
        a page of weights is read when a forward first touches it (only the routed experts'
        pages, for MoE layers).

        ``dtype``: ``"auto"`` computes in the checkpoint's dtype (transformers' bf16 dtype flow
        for a bf16 checkpoint, float32 otherwise); ``"float32"`` computes every activation in
        float32, widening bf16/f16 weights inside the kernels (no stored copy); ``"bfloat16"``
        runs the bf16 flow, and on a checkpoint not stored in bf16 makes one bf16 copy of its
        matrices at load. ``threads``: the size of rio_rt's worker pool (as
        ``rio_rt.set_num_threads``; ``None`` leaves it as it is, one thread per core by default).
        """
        if dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"dtype: expected 'auto', 'bfloat16' or 'float32', got {dtype!r}")
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ValueError(f"threads: expected an int >= 1 or None, got {threads!r}")
            _rio_rt.set_num_threads(threads)
        return cls(_rio_rt.Model.load(os.fspath(path), dtype), os.fspath(path))

    @property
    def tokenizer(self) -> Optional[Tokenizer]:
        """The checkpoint folder's tokenizer and chat template (``rio_rt.Tokenizer``), loaded on
        first use; None when the folder has no ``tokenizer.json``."""
        if not self._tokenizer_loaded:
            self._tokenizer = Tokenizer.from_dir(self._path) if self._path is not None else None
            self._tokenizer_loaded = True
        return self._tokenizer

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

    # ----- generation (python/rio_rt/generation.py; the loop is rio_generate::generate) -----

    def default_sampling_params(self) -> SamplingParams:
        """The sampling defaults of this checkpoint: ``generation_config.json``'s values, as
        transformers reads them. With ``do_sample: true`` its temperature, top_k, top_p and min_p
        apply (values it leaves out stay off: no implicit top_k=50); otherwise decoding is greedy.
        Its repetition_penalty applies either way. Without the file: greedy."""
        g = _rio_rt.generation_defaults(self._native)
        values: Dict[str, Any] = {}
        if g["do_sample"]:
            for key in ("temperature", "top_k", "top_p", "min_p"):
                if g[key] is not None:
                    values[key] = g[key]
        if g["repetition_penalty"] is not None:
            values["repetition_penalty"] = g["repetition_penalty"]
        return SamplingParams(**values)

    def generate(
        self,
        prompt: Prompts,
        sampling: Optional[SamplingParams] = None,
        *,
        max_new_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        min_p: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        presence_penalty: Optional[float] = None,
        frequency_penalty: Optional[float] = None,
        stop: Union[None, int, str, Sequence[Union[int, str]]] = None,
        seed: Optional[int] = None,
        logprobs: Optional[int] = None,
        ignore_eos: Optional[bool] = None,
        reasoning: Any = None,
        trace: bool = False,
        stream: Optional[Callable[[GenerationEvent], None]] = None,
        callback: Optional[Callable[[GenerationEvent], Optional[str]]] = None,
    ) -> Union[GenerationResult, List[GenerationResult]]:
        """Generates a continuation of ``prompt``.

        ``prompt``: token ids (a list of ints or a 1-D integer numpy array) or a str (encoded
        with the checkpoint's tokenizer), or a list of those / a 2-D id array for a batch, which
        returns a list of results (prompts of different lengths run together; each result equals
        the prompt's solo run).

        Sampling: ``sampling=SamplingParams(...)`` and/or keyword arguments with the same names
        (keywords win). Values given by neither come from the checkpoint's
        ``generation_config.json`` (see ``default_sampling_params``); nothing there means greedy.
        ``stop``: token ids and/or strings (strings need a tokenizer). ``seed``: prompt ``i`` of
        a batch samples with ``seed + i``, so it reproduces ``generate(prompts[i], seed=seed+i)``.

        ``reasoning``: ``rio_rt.SwiReasoning(...)`` / ``rio_rt.SoftThinking(...)``; ``trace=True``
        keeps their per-step trace in ``result.trace``.

        ``stream(event)`` sees every generated token (a ``GenerationEvent``, text deltas
        included). ``callback(event)`` too, and may return ``"stop"`` (end this prompt, finish
        reason ``"callback"``) or ``"switch"`` (flip latent/explicit mode in reasoning runs);
        without either the loop never calls into Python. An exception raised by either ends the
        generation and propagates.
        """
        params, decode = self._generation_inputs(
            sampling, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            repetition_penalty=repetition_penalty, presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
            stop=stop, seed=seed, logprobs=logprobs, ignore_eos=ignore_eos)
        prompts, batched = self._prompts(prompt)
        if stream is not None and not callable(stream):
            raise TypeError(f"stream: expected a callable(event), got {type(stream).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable(event), got {type(callback).__name__}")
        observer = _observer(stream, callback) if (stream is not None or callback is not None) else None
        from rio_rt.reasoning import resolve_reasoning  # (H2) special tokens from the tokenizer, checked against V
        reasoning = resolve_reasoning(reasoning, self)
        raw = _rio_rt.generate(self._native, prompts, [params._native(i) for i in range(len(prompts))], decode=decode,
                               reasoning=reasoning, trace=bool(trace), observer=observer)
        results = [_result(r) for r in raw]
        return results if batched else results[0]

    def stream(self, prompt: Prompts, sampling: Optional[SamplingParams] = None, **kwargs: Any) -> Iterator[GenerationEvent]:
        """``generate`` as an iterator of ``GenerationEvent`` (same arguments, except ``stream``).
        The generation runs in a thread with the GIL released; leaving the loop early (``break``)
        ends it after the current step. The generator's return value is ``generate``'s result."""
        if "stream" in kwargs:
            raise TypeError("stream: Model.stream is the streaming form; use generate(stream=...) for a callable")
        events: "queue.Queue[Any]" = queue.Queue()
        closed = threading.Event()

        def forward(event: GenerationEvent) -> None:
            if closed.is_set():
                raise _StreamClosed()
            events.put(event)

        def work() -> None:
            try:
                events.put(_Finished(self.generate(prompt, sampling, stream=forward, **kwargs)))
            except BaseException as e:  # handed to the consumer's thread
                events.put(_Failed(e))

        worker = threading.Thread(target=work, name="rio_rt-stream", daemon=True)
        worker.start()
        try:
            while True:
                item = events.get()
                if isinstance(item, _Finished):
                    return item.result
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            closed.set()
            worker.join()

    def _generation_inputs(self, sampling: Optional[SamplingParams], *, stop: Any, **values: Any
                           ) -> Tuple[SamplingParams, Optional[_Decode]]:
        if sampling is not None and not isinstance(sampling, SamplingParams):
            raise TypeError(f"sampling: expected rio_rt.SamplingParams or None, got {type(sampling).__name__}")
        overrides = {k: v for k, v in values.items() if v is not None}
        if stop is not None:
            overrides["stop_token_ids"], overrides["stop_strings"] = split_stop(stop)
        params = dataclasses.replace(sampling if sampling is not None else self.default_sampling_params(), **overrides)
        for t in params.stop_token_ids:
            if t >= self.vocab_size:
                raise ValueError(f"stop: token id {t} is outside the vocabulary of {self.vocab_size}")
        tokenizer = self.tokenizer
        if params.stop_strings and tokenizer is None:
            raise ValueError("stop: stop strings need the checkpoint's tokenizer (tokenizer.json); this model has none")
        return params, None if tokenizer is None else _text_decoder(tokenizer)

    def _prompts(self, prompt: Prompts) -> Tuple[List[List[int]], bool]:
        """The prompts as lists of ids, and whether the call is a batch."""
        if isinstance(prompt, np.ndarray):
            if prompt.ndim == 2:
                return [self._ids(row, f"prompt[{i}]") for i, row in enumerate(prompt)], True
            return [self._ids(prompt, "prompt")], False
        if isinstance(prompt, str) or (isinstance(prompt, (list, tuple)) and all(_is_token_id(t) for t in prompt)):
            return [self._ids(prompt, "prompt")], False
        if isinstance(prompt, (list, tuple)):
            if not prompt:
                raise ValueError("prompt: an empty batch")
            return [self._ids(p, f"prompt[{i}]") for i, p in enumerate(prompt)], True
        raise TypeError(f"prompt: expected token ids, a str or a list of them, got {type(prompt).__name__}")

    def _ids(self, prompt: Any, name: str) -> List[int]:
        if isinstance(prompt, str):
            tokenizer = self.tokenizer
            if tokenizer is None:
                raise ValueError(f"{name}: a text prompt needs the checkpoint's tokenizer (tokenizer.json); "
                                 "this model has none, pass token ids instead")
            ids = list(tokenizer.encode(prompt))
        else:
            array = np.asarray(prompt)
            if array.ndim != 1:
                raise ValueError(f"{name}: expected a 1-D sequence of token ids, got shape {array.shape}")
            if array.size and not np.issubdtype(array.dtype, np.integer):
                raise TypeError(f"{name}: token ids must be ints, got {array.dtype}")
            ids = [int(t) for t in array]
        if not ids:
            raise ValueError(f"{name}: is empty (it needs at least one token)")
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"{name}: token id {bad} is outside the vocabulary of {self.vocab_size}")
        return ids


#: One prompt (token ids, a 1-D id array or a str) or a batch of them (a list, or a 2-D id array).
Prompts = Union[str, Sequence[int], Array, Sequence[Union[str, Sequence[int], Array]]]


#: What the native decode loop turns ids into text with: the native tokenizer, or a callable.
_Decode = Union["_rio_rt.Tokenizer", Callable[[List[int]], str]]


def _text_decoder(tokenizer: Tokenizer) -> _Decode:
    """The native tokenizer itself when ``tokenizer`` is a plain ``rio_rt.Tokenizer``, so the
    decode loop decodes without the GIL (special tokens skipped); otherwise (a subclass that
    may decode differently) its ``decode`` called from Python."""
    if type(tokenizer) is Tokenizer:
        return tokenizer._native
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def _is_token_id(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class _StreamClosed(Exception):
    """Raised inside the stream's observer once the consumer has left: ends the generation."""


@dataclasses.dataclass
class _Finished:
    result: Union[GenerationResult, List[GenerationResult]]


@dataclasses.dataclass
class _Failed:
    error: BaseException


def _observer(stream: Optional[Callable[[GenerationEvent], None]],
              callback: Optional[Callable[[GenerationEvent], Optional[str]]]) -> Callable[[List[tuple]], List[Tuple[int, str]]]:
    """The native per-step observer: events to ``stream``, then to ``callback`` (steering)."""

    def observe(raw_events: List[tuple]) -> List[Tuple[int, str]]:
        steering = []
        for raw in raw_events:
            event = GenerationEvent(*raw)
            if stream is not None:
                stream(event)
            if callback is not None:
                answer = callback(event)
                if answer is not None:
                    if answer not in ("stop", "switch"):
                        raise ValueError(f"callback: expected None, 'stop' or 'switch', got {answer!r}")
                    steering.append((event.index, answer))
        return steering

    return observe


def _result(raw: Dict[str, Any]) -> GenerationResult:
    trace = raw["trace"]
    if trace is not None:
        from rio_rt.reasoning import Trace  # the reasoning module wraps the native dict of lists

        trace = Trace.from_dict(trace)
    return GenerationResult(
        token_ids=raw["token_ids"], text=raw["text"], finish_reason=raw["finish_reason"], logprobs=raw["logprobs"],
        top_logprobs=[[(int(t), float(lp)) for t, lp in step] for step in raw["top_logprobs"]], trace=trace)
