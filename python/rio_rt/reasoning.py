"""Latent reasoning: SwiReasoning and Soft Thinking, run inside the Rust decode loop.

Pass one of these to ``Model.generate(..., reasoning=...)``; ask for ``trace=True`` to get a
:class:`Trace` per result (mode, entropy, reference entropy, switches, injected tokens, recorded
token and its probability at every step), and draw it with :func:`plot_trace`.

The algorithms follow ``shared/spec/swireasoning.md`` (the official code's behaviour, section
numbers below refer to it). Special tokens left as ``None`` are resolved from the model's
tokenizer; checkpoints without one need every id given.

A per-step ``callback`` (``Model.generate(..., callback=fn)``) receives each step's event and may
return ``"switch"`` (flip latent ⇄ explicit now, starting a new block) or ``"stop"``. Without a
callback the loop never enters Python; with one, every step re-acquires the GIL and calls it once
per sequence (measured: +14 µs a step for a callback that returns None, on a 2-core machine; plus
whatever the callback itself does), so use it for research, not for throughput.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["SoftThinking", "SwiReasoning", "Trace", "plot_trace", "resolve_reasoning"]

#: Strings whose token ids (every sub-token, encoded without special tokens) the official
#: SwiReasoning feeds hard even in latent mode (spec 1.3 step 7, ``get_math_symbols_ids``):
#: digits, ASCII letters, operators and common LaTeX commands.
MATH_SYMBOLS: Tuple[str, ...] = tuple("0123456789") + tuple("abcdefghijklmnopqrstuvwxyz") + \
    tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + tuple("+-*/^=<>()[]{}|_") + (
        "\\frac", "\\sqrt", "\\boxed", "\\pi", "\\cdot", "\\times", "\\div", "\\pm", "\\leq", "\\geq",
        "\\neq", "\\approx", "\\infty", "\\sum", "\\prod", "\\int", "\\log", "\\ln", "\\sin", "\\cos",
        "\\tan", "\\alpha", "\\beta", "\\theta", "\\left", "\\right", "\\binom", "\\dfrac")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be at least {minimum}, got {value}")


def _check_float(name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if math.isnan(value) or value < low or value > high or (open_low and value == low):
        bound = f"({low}, {high}]" if open_low else f"[{low}, {high}]"
        raise ValueError(f"{name}: must be in {bound}, got {value}")


def _check_ids(name: str, ids: Any) -> None:
    if ids is None:
        return
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{name}: expected a sequence of token ids, got {type(ids).__name__}")
    for t in ids:
        _check_id(name, t)


def _check_id(name: str, t: Any) -> None:
    if t is None:
        return
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(f"{name}: expected a token id (int), got {t!r}")
    if t < 0:
        raise ValueError(f"{name}: token ids are >= 0, got {t}")


@dataclass(frozen=True)
class SwiReasoning:
    """SwiReasoning (spec section 1): start latent (the next input is ``softmax(z)ᵀE`` of the full,
    untempered distribution), switch to explicit as soon as the entropy falls below the block's
    reference, back to latent when it rises above it after at least ``window`` explicit steps.

    Defaults are the official ``generate_swir`` ones. ``window``: W (>= 1). ``alpha0``/``beta0``:
    weights of the soft embedding in the ``<think>`` / ``</think>`` blends at explicit→latent /
    latent→explicit switches, annealed linearly to 1 over ``max_new_tokens``. ``max_switch_count``:
    C for switch-count control (convergence ids injected after the C-th..2C-th latent→explicit
    switch, termination ids after the (2C+1)-th, then at most ``termination_max_tokens`` steps).
    ``step0_token_id``: the row mixed 0.1 into the first soft input (default: the newline token;
    ``faithful=True``: the literal two-character token ``\\n`` the official code looks up; a
    ``ValueError`` when the vocabulary lacks it, where the official code fails too).
    ``math_token_ids``: tokens fed hard even in latent steps (default: the official symbol list,
    :data:`MATH_SYMBOLS`, encoded with the tokenizer; ``()`` turns it off). ``soft_form``:
    ``"full"`` reads every row of E; ``"pruned"`` skips the least likely tokens that together
    weigh at most ``pruned_mass``, which bounds the error of the soft embedding by
    ``pruned_mass × max row norm`` (1e-4 relative, far below the bf16 rounding of the table);
    ``"auto"`` is pruned, except full when ``faithful``. ``start_explicit``: begin in explicit
    mode (with a window larger than ``max_new_tokens``: plain chain of thought).

    ``faithful=True`` reproduces the official code's quirks where the clean default differs:
    absolute (not relative) min-p and no penalties in the token filter; tokens injected by
    switch-count control while latent are fed as the soft embedding (clean: as hard tokens);
    after a sampled ``</think>`` a latent→explicit switch can still feed the ``β`` blend (clean:
    every input is hard); the step-0 row is the literal ``\\n`` token; ``soft_form="auto"`` is
    full. Both keep every other quirk (tokens sampled in latent steps are recorded; a forced
    ``</think>`` does not lock explicit mode) and compute entropies and soft embeddings in fp32.
    """

    window: int = 512
    alpha0: float = 1.0
    beta0: float = 0.7
    max_switch_count: Optional[int] = None
    think_token_id: Optional[int] = None
    end_think_token_id: Optional[int] = None
    convergence_token_ids: Optional[Sequence[int]] = None
    termination_token_ids: Optional[Sequence[int]] = None
    termination_max_tokens: int = 32
    step0_token_id: Optional[int] = None
    math_token_ids: Optional[Sequence[int]] = None
    soft_form: str = "auto"
    start_explicit: bool = False
    faithful: bool = False
    pruned_mass: float = 1e-4

    kind: ClassVar[str] = "swireasoning"
    convergence_words: ClassVar[str] = "</think>"
    termination_words: ClassVar[str] = "</think>\n\nThe final answer is"

    def __post_init__(self) -> None:
        _check_int("window", self.window, 1)
        _check_float("alpha0", self.alpha0, 0.0, 1.0)
        _check_float("beta0", self.beta0, 0.0, 1.0)
        if self.max_switch_count is not None:
            _check_int("max_switch_count", self.max_switch_count, 1)
        _check_int("termination_max_tokens", self.termination_max_tokens, 1)
        for name in ("think_token_id", "end_think_token_id", "step0_token_id"):
            _check_id(name, getattr(self, name))
        for name in ("convergence_token_ids", "termination_token_ids", "math_token_ids"):
            _check_ids(name, getattr(self, name))
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.soft_form not in ("auto", "full", "pruned"):
            raise ValueError(f"soft_form: expected 'auto', 'full' or 'pruned', got {self.soft_form!r}")
        _check_float("pruned_mass", self.pruned_mass, 0.0, 0.5)
        for name in ("start_explicit", "faithful"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")

    def resolved(self, tokenizer: Any) -> "SwiReasoning":
        """A copy with every special token that is ``None`` resolved with ``tokenizer`` (an object
        with ``token_to_id(str)`` and ``encode(str, add_special_tokens=False)``, or ``None``)."""
        ids: Dict[str, Any] = {}
        ids["think_token_id"] = self.think_token_id if self.think_token_id is not None else \
            _special(tokenizer, "<think>", "think_token_id")
        ids["end_think_token_id"] = self.end_think_token_id if self.end_think_token_id is not None else \
            _special(tokenizer, "</think>", "end_think_token_id")
        if self.convergence_token_ids is None:
            ids["convergence_token_ids"] = _encode(tokenizer, self.convergence_words) if tokenizer is not None \
                else (ids["end_think_token_id"],)
        if self.termination_token_ids is None and tokenizer is not None:
            ids["termination_token_ids"] = _encode(tokenizer, self.termination_words)
        if self.termination_token_ids is None and tokenizer is None and self.max_switch_count is not None:
            raise ValueError("termination_token_ids: switch-count control needs the ids of "
                             f"{self.termination_words!r}; pass them (this model has no tokenizer)")
        if self.step0_token_id is None and tokenizer is not None:
            if self.faithful:
                # Quirk 6: convert_tokens_to_ids("\\n"), the two-character token string.
                ids["step0_token_id"] = _special(tokenizer, "\\n", "step0_token_id")
            else:
                ids["step0_token_id"] = _encode(tokenizer, "\n")[-1]
        if self.math_token_ids is None:
            ids["math_token_ids"] = () if tokenizer is None else \
                tuple(sorted({t for s in MATH_SYMBOLS for t in _encode(tokenizer, s)}))
        if self.soft_form == "auto":
            ids["soft_form"] = "full" if self.faithful else "pruned"
        return dataclasses.replace(self, **ids)


@dataclass(frozen=True)
class SoftThinking:
    """Soft Thinking (spec section 2): while thinking, feed a concept token (the ``top_k`` most
    likely tokens of the tempered, filtered distribution, renormalised: ``Σ w_j E[idx_j]``) and
    record its top token; Cold Stop forces ``</think>`` once the entropy (of ``softmax(z/T)``)
    has stayed below ``cold_stop_entropy`` for ``cold_stop_steps`` consecutive steps; after the
    first ``</think>``, plain sampling with the request's own sampling parameters (they play the
    official ``after_thinking_*`` role).

    Defaults are the README / paper-reproduction values. ``top_k``: K, the concept size (>= 1).
    ``filter_top_k``: the thinking filter's top-k applied before top-p (0 = off). ``min_p`` is
    relative to the most likely token. ``temperature=0`` is greedy (a one-token concept).
    ``cold_stop_entropy=0`` turns Cold Stop off. ``dirichlet_alpha`` / ``gumbel_tau``: optional
    concept noise (arXiv 2508.03440), seeded by ``noise_seed`` (else the request's seed).
    ``start_explicit``: skip thinking (plain decoding). Not reproduced: the official abort of an
    answer after ``cold_stop_steps`` low-entropy answer tokens.
    """

    top_k: int = 10
    top_p: float = 0.95
    min_p: float = 0.001
    temperature: float = 0.6
    cold_stop_entropy: float = 0.01
    cold_stop_steps: int = 256
    end_think_token_id: Optional[int] = None
    filter_top_k: int = 30
    dirichlet_alpha: Optional[float] = None
    gumbel_tau: Optional[float] = None
    noise_seed: Optional[int] = None
    start_explicit: bool = False

    kind: ClassVar[str] = "soft_thinking"

    def __post_init__(self) -> None:
        _check_int("top_k", self.top_k, 1)
        _check_int("filter_top_k", self.filter_top_k, 0)
        _check_float("top_p", self.top_p, 0.0, 1.0, open_low=True)
        _check_float("min_p", self.min_p, 0.0, 1.0)
        _check_float("temperature", self.temperature, 0.0, 100.0)
        _check_float("cold_stop_entropy", self.cold_stop_entropy, 0.0, math.inf)
        _check_int("cold_stop_steps", self.cold_stop_steps, 1)
        _check_id("end_think_token_id", self.end_think_token_id)
        if self.dirichlet_alpha is not None and self.gumbel_tau is not None:
            raise ValueError("dirichlet_alpha, gumbel_tau: choose at most one kind of concept noise")
        if self.dirichlet_alpha is not None:
            _check_float("dirichlet_alpha", self.dirichlet_alpha, 0.0, math.inf, open_low=True)
        if self.gumbel_tau is not None:
            _check_float("gumbel_tau", self.gumbel_tau, 0.0, math.inf, open_low=True)
        if self.noise_seed is not None:
            _check_int("noise_seed", self.noise_seed, 0)
        if not isinstance(self.start_explicit, bool):
            raise TypeError(f"start_explicit: expected a bool, got {self.start_explicit!r}")

    def resolved(self, tokenizer: Any) -> "SoftThinking":
        """A copy with ``end_think_token_id`` resolved with ``tokenizer`` when ``None``."""
        if self.end_think_token_id is not None:
            return self
        return dataclasses.replace(self, end_think_token_id=_special(tokenizer, "</think>", "end_think_token_id"))


Reasoning = Union[SwiReasoning, SoftThinking]


def _special(tokenizer: Any, token: str, field: str) -> int:
    if tokenizer is None:
        raise ValueError(f"{field}: not given, and this model has no tokenizer to look up {token!r}; "
                         "pass the token id")
    # rio_rt.Tokenizer knows the checkpoint's own thinking tokens; other tokenizers are asked by text.
    known = {"<think>": "think_token_id", "</think>": "end_think_token_id"}.get(token)
    tid = getattr(tokenizer, known, None) if known else None
    if tid is None:
        tid = tokenizer.token_to_id(token)
    if tid is None:
        raise ValueError(f"{field}: {token!r} is not a token of this model's tokenizer; pass the token id")
    return int(tid)


def _encode(tokenizer: Any, text: str) -> Tuple[int, ...]:
    ids = tuple(int(t) for t in tokenizer.encode(text, add_special_tokens=False))
    if not ids:
        raise ValueError(f"the tokenizer encodes {text!r} to no tokens")
    return ids


def resolve_reasoning(reasoning: Optional[Reasoning], model: Any) -> Optional[Reasoning]:
    """``reasoning`` with its special tokens resolved from ``model.tokenizer`` and checked against
    ``model.vocab_size`` (``None`` stays ``None``). Raises ``TypeError`` for anything else and
    ``ValueError`` naming the field for unknown or out-of-vocabulary tokens."""
    if reasoning is None:
        return None
    if not isinstance(reasoning, (SwiReasoning, SoftThinking)):
        raise TypeError(f"reasoning: expected rio_rt.SwiReasoning, rio_rt.SoftThinking or None, "
                        f"got {type(reasoning).__name__}")
    tokenizer = getattr(model, "tokenizer", None)
    out = reasoning.resolved(tokenizer)
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None:
        for f in dataclasses.fields(out):
            value = getattr(out, f.name)
            if not f.name.endswith(("token_id", "token_ids")) or value is None:
                continue
            for t in (value if isinstance(value, tuple) else (value,)):
                if t >= vocab:
                    raise ValueError(f"{f.name}: token {t} is outside the vocabulary of {vocab}")
    return out


_COLUMNS = ("step", "mode", "entropy", "ref_entropy", "switched", "injected", "token_id", "token_prob", "fed_soft")


@dataclass(frozen=True)
class Trace:
    """Per-step record of one sequence's reasoning run, as columns of equal length.

    ``mode``: ``"latent"`` or ``"explicit"`` after the step's update (the mode the next input is
    fed in); ``entropy``: the switching entropy in nats (SwiReasoning: of the untempered softmax;
    Soft Thinking: of ``softmax(z/T)``); ``ref_entropy``: the block's reference (SwiReasoning;
    ``None`` for Soft Thinking); ``switched``: ``"to_explicit"``, ``"to_latent"`` or ``None``;
    ``injected``: the token was forced (switch-count control, Cold Stop); ``token_id`` /
    ``token_prob``: the recorded token and its probability under the distribution it came from
    (forced tokens: under the model's untempered softmax); ``fed_soft``: the next input is a soft
    embedding."""

    step: List[int]
    mode: List[str]
    entropy: List[float]
    ref_entropy: List[Optional[float]]
    switched: List[Optional[str]]
    injected: List[bool]
    token_id: List[int]
    token_prob: List[float]
    fed_soft: List[bool]

    @classmethod
    def from_dict(cls, d: Dict[str, Sequence[Any]]) -> "Trace":
        missing = [c for c in _COLUMNS if c not in d]
        if missing:
            raise ValueError(f"trace: missing columns {missing}")
        lengths = {len(d[c]) for c in _COLUMNS}
        if len(lengths) > 1:
            raise ValueError(f"trace: columns of different lengths {sorted(lengths)}")
        return cls(**{c: list(d[c]) for c in _COLUMNS})

    def __len__(self) -> int:
        return len(self.step)

    def to_dict(self) -> Dict[str, List[Any]]:
        return {c: list(getattr(self, c)) for c in _COLUMNS}

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per step (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Trace.to_pandas needs pandas: pip install pandas") from e
        return pd.DataFrame(self.to_dict())

    def switch_steps(self, direction: Optional[str] = None) -> List[int]:
        """Steps where a switch happened (``direction``: ``"to_explicit"``/``"to_latent"``/``None`` = both)."""
        return [s for s, w in zip(self.step, self.switched) if w is not None and (direction is None or w == direction)]

    def format_table(self, max_rows: Optional[int] = None, decode: Optional[Any] = None) -> str:
        """A plain-text table, one line per step (the first ``max_rows`` ones). ``decode``: an
        optional ``callable(list[int]) -> str`` for a token column."""
        head = ["step", "mode", "entropy", "ref_H", "switch", "inj", "token", "prob", "fed"]
        if decode is not None:
            head.insert(7, "text")
        rows = []
        n = len(self) if max_rows is None else min(max_rows, len(self))
        for i in range(n):
            ref = self.ref_entropy[i]
            row = [str(self.step[i]), self.mode[i], f"{self.entropy[i]:.4f}", "-" if ref is None else f"{ref:.4f}",
                   {"to_explicit": "->explicit", "to_latent": "->latent"}.get(self.switched[i] or "", ""),
                   "*" if self.injected[i] else "", str(self.token_id[i]), f"{self.token_prob[i]:.3f}",
                   "soft" if self.fed_soft[i] else "token"]
            if decode is not None:
                row.insert(7, repr(decode([self.token_id[i]]))[1:-1][:16])
            rows.append(row)
        widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h) for j, h in enumerate(head)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        if n < len(self):
            lines.append(f"... {len(self) - n} more steps")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def plot_trace(result_or_trace: Any, path: Optional[str] = None, title: Optional[str] = None) -> Any:
    """Draws a trace (or a ``GenerationResult`` carrying one): entropy per step, the block
    reference entropy, latent steps shaded, switches marked. Saves to ``path`` when given and
    returns the matplotlib ``Figure`` (needs matplotlib)."""
    trace = getattr(result_or_trace, "trace", result_or_trace)
    if isinstance(trace, dict):
        trace = Trace.from_dict(trace)
    if not isinstance(trace, Trace):
        raise TypeError("plot_trace: expected a Trace or a result generated with trace=True")
    try:
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plot_trace needs matplotlib: pip install matplotlib") from e
    fig, ax = plt.subplots(figsize=(10, 3.5))
    steps = trace.step
    latent = [m == "latent" for m in trace.mode]
    start = None
    for i, (s, lat) in enumerate(zip(steps, latent + [False])):
        if lat and start is None:
            start = s
        if not lat and start is not None:
            ax.axvspan(start - 0.5, s - 0.5, color="tab:purple", alpha=0.15, lw=0)
            start = None
    if start is not None:
        ax.axvspan(start - 0.5, steps[-1] + 0.5, color="tab:purple", alpha=0.15, lw=0)
    ax.plot(steps, trace.entropy, color="tab:blue", lw=1.2, label="entropy (nats)")
    if any(r is not None for r in trace.ref_entropy):
        ref = [math.nan if r is None else r for r in trace.ref_entropy]
        ax.step(steps, ref, where="post", color="tab:orange", lw=1.0, ls="--", label="block reference")
    for s, w in zip(steps, trace.switched):
        if w is not None:
            ax.axvline(s, color="tab:green" if w == "to_explicit" else "tab:red", lw=0.8, alpha=0.8)
    inj = [s for s, f in zip(steps, trace.injected) if f]
    if inj:
        ax.plot(inj, [trace.entropy[steps.index(s)] for s in inj], "kx", ms=5, label="injected token")
    ax.set_xlabel("step")
    ax.set_ylabel("entropy (nats)")
    ax.set_title(title or "latent (shaded) and explicit steps; green: →explicit, red: →latent")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
