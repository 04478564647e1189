"""Weight lineage: does a checkpoint fit a linear blend of candidate parents?

``fit(candidate, parents)`` fits, for every tensor the candidate shares with all parents,
candidate ≈ Σ cᵢ·parentᵢ (+ b with ``intercept=True``) by least squares in float64, streaming the
memory-mapped shards on the native worker pool. Tensor names are matched as the loader reads them:
``model.language_model.`` and ``model.`` prefixes are the same, vision and MTP tensors are
skipped, and per-expert matrices compare with fused ``gate_up_proj``/``down_proj`` tensors.

Verdict rules (thresholds are relative and can be overridden with ``thresholds={...}``):

- ``identical``: every tensor has ‖candidate − parent‖ ≤ ``identical`` (1e-6) × ‖candidate‖;
- ``blend``: tensors whose relative residual ‖r‖/‖candidate‖ ≤ ``explained`` (0.01) hold at least
  ``blend_share`` (90%) of the parameters, and at least two parents have a parameter-weighted
  mean coefficient ≥ ``material_coefficient`` (0.05);
- ``fine_tuned`` from a parent (``verdict.parent``): the parameter-weighted mean cosine with it is
  ≥ ``finetune_cosine`` (0.9); or fine-tuned from a blend (``verdict.coefficients``): two material
  coefficients as above and a parameter-weighted mean R² ≥ ``finetune_r2`` (0.5);
- ``unrelated``: none of the above.

A tensor is an outlier when the blend does not explain it or one of its coefficients is more
than ``coefficient_outlier`` (0.05) from the overall mean.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TextIO, Union

from rio_rt import _rio_rt

PathLike = Union[str, "os.PathLike[str]"]
ProgressCallback = Callable[[int, int, str, int, int], None]

THRESHOLD_NAMES = (
    "identical",
    "explained",
    "coefficient_outlier",
    "blend_share",
    "material_coefficient",
    "finetune_cosine",
    "finetune_r2",
)


@dataclass(frozen=True)
class TensorFit:
    """The fit of one tensor; lists are per parent, in the order the parents were given."""

    name: str
    layer: Optional[int]
    kind: str
    shape: list[int]
    params: int
    elements: int
    coefficients: list[float]
    intercept: Optional[float]
    rel_residual: float
    r2: Optional[float]
    cosines: list[Optional[float]]
    rel_distances: list[float]
    explained: bool
    outlier: bool


@dataclass(frozen=True)
class Summary:
    """Parameter-weighted statistics of a layer (``layer N``), the rest (``other``) or ``overall``."""

    name: str
    layer: Optional[int]
    tensors: int
    params: int
    coefficient_mean: list[float]
    coefficient_std: list[float]
    coefficient_min: list[float]
    coefficient_max: list[float]
    cosine_mean: list[float]
    rel_residual_mean: float
    rel_residual_max: float
    r2_mean: float
    share_explained: float
    outliers: list[str]


@dataclass(frozen=True)
class NotCompared:
    name: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    """``kind`` is ``identical``, ``blend``, ``fine_tuned`` or ``unrelated``; ``parent`` indexes the
    parents (identical, fine-tuned from one), ``coefficients`` are set for a blend (or a fine-tuned blend)."""

    kind: str
    parent: Optional[int]
    coefficients: Optional[list[float]]
    text: str


@dataclass(frozen=True)
class ProvenanceResult:
    candidate: str
    parents: list[str]
    mode: str
    intercept: bool
    thresholds: dict[str, float]
    tensors: list[TensorFit]
    layers: list[Summary]
    overall: Summary
    not_compared: list[NotCompared]
    verdict: Verdict
    bytes_read: int
    seconds: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProvenanceResult":
        return cls(
            **{
                **d,
                "tensors": [TensorFit(**t) for t in d["tensors"]],
                "layers": [Summary(**s) for s in d["layers"]],
                "overall": Summary(**d["overall"]),
                "not_compared": [NotCompared(**n) for n in d["not_compared"]],
                "verdict": Verdict(**d["verdict"]),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def gb_per_s(self) -> float:
        return self.bytes_read / 1e9 / self.seconds if self.seconds > 0 else 0.0

    def table(self, tensors: bool = False) -> str:
        """A readable report: parents, per-layer summaries, outliers, verdict (and every tensor)."""
        return format_table(self, tensors)


def _check_path(value: Any, arg: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{arg}: expected a path (str or os.PathLike), got {type(value).__name__}")
    return os.fspath(value)


def _check_int(value: Any, arg: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg}: expected an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{arg}: expected {low} <= {arg} <= {high}, got {value}")
    return value


def fit(
    candidate: PathLike,
    parents: Sequence[PathLike],
    *,
    quick: bool = False,
    sample: int = 65536,
    seed: int = 0,
    intercept: bool = False,
    thresholds: Optional[dict[str, float]] = None,
    progress: Optional[ProgressCallback] = None,
) -> ProvenanceResult:
    """Fits ``candidate`` (a checkpoint folder or ``.safetensors`` file) as a blend of ``parents``.

    ``quick`` reads a fixed, seeded sample of ``sample`` elements per tensor (in blocks of 256)
    instead of everything. ``progress(done, total, name, bytes_done, bytes_total)`` is called
    before each tensor and once at the end. Raises ``CheckpointError`` for unreadable or
    inconsistent checkpoints (shape mismatches included), ``TypeError``/``ValueError`` for bad
    arguments.
    """
    cand = _check_path(candidate, "candidate")
    if isinstance(parents, (str, bytes, os.PathLike)) or not isinstance(parents, Sequence):
        raise TypeError(f"parents: expected a list of paths, got {type(parents).__name__}")
    if len(parents) == 0:
        raise ValueError("parents: at least one parent checkpoint is needed")
    pars = [_check_path(p, f"parents[{i}]") for i, p in enumerate(parents)]
    _check_int(sample, "sample", 1, 2**63 - 1)
    _check_int(seed, "seed", 0, 2**64 - 1)
    if thresholds is not None:
        unknown = sorted(set(thresholds) - set(THRESHOLD_NAMES))
        if unknown:
            raise ValueError(f"thresholds: unknown names {unknown}; expected some of {list(THRESHOLD_NAMES)}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress: expected a callable or None, got {type(progress).__name__}")
    doc = _rio_rt.provenance_fit(
        cand,
        pars,
        quick=bool(quick),
        sample=sample,
        seed=seed,
        intercept=bool(intercept),
        thresholds=None if thresholds is None else {k: float(v) for k, v in thresholds.items()},
        progress=progress,
    )
    return ProvenanceResult.from_dict(json.loads(doc))


# ---- text report ---------------------------------------------------------------------------------


def _num(v: Optional[float], fmt: str = "{:+.4f}") -> str:
    return "-" if v is None else fmt.format(v)


def _params(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [line(header), "-" * len(line(header))] + [line(r) for r in rows]


def format_table(r: ProvenanceResult, tensors: bool = False) -> str:
    k = len(r.parents)
    out = [f"candidate: {r.candidate}  ({r.mode} mode{', with intercept' if r.intercept else ''})"]
    out += [f"  parent {i + 1}: {p}" for i, p in enumerate(r.parents)]
    out.append("")
    if tensors:
        header = ["tensor", "params"] + [f"c{i + 1}" for i in range(k)] + ["rel.resid", "R2"] + [f"cos{i + 1}" for i in range(k)]
        rows = [
            [t.name + (" *" if t.outlier else ""), _params(t.params)]
            + [_num(c) for c in t.coefficients]
            + [f"{t.rel_residual:.2e}", _num(t.r2, "{:.5f}")]
            + [_num(c, "{:.4f}") for c in t.cosines]
            for t in r.tensors
        ]
        out += _rows(header, rows) + ["(* outlier)", ""]
    header = ["group", "tensors", "params"] + [f"c{i + 1} mean±std" for i in range(k)] + ["rel.resid", "explained", "outliers"]
    rows = [
        [s.name, str(s.tensors), _params(s.params)]
        + [f"{m:+.4f}±{sd:.4f}" for m, sd in zip(s.coefficient_mean, s.coefficient_std)]
        + [f"{s.rel_residual_mean:.2e}", f"{100 * s.share_explained:.1f}%", str(len(s.outliers))]
        for s in r.layers + [r.overall]
    ]
    out += _rows(header, rows)
    if r.overall.outliers:
        shown = r.overall.outliers[:10]
        more = len(r.overall.outliers) - len(shown)
        out += ["", f"outliers ({len(r.overall.outliers)}): " + ", ".join(shown) + (f", ... {more} more" if more else "")]
    if r.not_compared:
        out += ["", f"not compared ({len(r.not_compared)}):"]
        out += [f"  {n.name}: {n.reason}" for n in r.not_compared[:10]]
        if len(r.not_compared) > 10:
            out.append(f"  ... {len(r.not_compared) - 10} more")
    out += ["", f"read {_bytes(r.bytes_read)} in {r.seconds:.2f} s ({r.gb_per_s:.2f} GB/s)", f"verdict: {r.verdict.text}"]
    return "\n".join(out)


# ---- plot ----------------------------------------------------------------------------------------


def plot(r: ProvenanceResult, path: PathLike) -> None:
    """Coefficients by layer, one panel per parent, one series per tensor type (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install 'rio_rt[plot]'") from e
    k = len(r.parents)
    fig, axes = plt.subplots(k, 1, figsize=(11, 3.2 * k), sharex=True, squeeze=False)
    kinds = sorted({t.kind for t in r.tensors if t.layer is not None})
    markers = "o^sDvP*Xh<>"
    for i, ax in enumerate(axes[:, 0]):
        for n, kind in enumerate(kinds):
            pts = sorted((t.layer, t.coefficients[i]) for t in r.tensors if t.kind == kind and t.layer is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[n % len(markers)], markersize=4,
                    linewidth=0.8, label=kind)
        ax.axhline(r.overall.coefficient_mean[i], color="black", linewidth=0.6, linestyle="--")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_ylabel(f"c{i + 1}: {os.path.basename(r.parents[i].rstrip('/')) or r.parents[i]}")
    axes[-1, 0].set_xlabel("layer (dashed: overall mean)")
    axes[0, 0].set_title(textwrap.fill(r.verdict.text, 110), fontsize=8)
    if kinds:
        axes[0, 0].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120)
    plt.close(fig)


# ---- command line --------------------------------------------------------------------------------


class ProgressBar:
    """A byte-weighted progress bar on stderr; redrawn in place on a terminal, every 10% otherwise."""

    def __init__(self, stream: Optional[TextIO] = None, width: int = 30):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.start = time.perf_counter()
        self.last_decile = -1

    def __call__(self, done: int, total: int, name: str, bytes_done: int, bytes_total: int) -> None:
        frac = bytes_done / bytes_total if bytes_total else 1.0
        decile = int(frac * 10)
        if not self.tty and decile == self.last_decile and done < total:
            return
        self.last_decile = decile
        filled = int(self.width * frac)
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * frac:5.1f}%  {done}/{total} tensors  "
            f"{_bytes(bytes_done)} of {_bytes(bytes_total)}  {time.perf_counter() - self.start:.1f}s  {name}"
        )
        self.stream.write(("\r\033[K" + line) if self.tty else line + "\n")
        if self.tty and done == total:
            self.stream.write("\r\033[K")
        self.stream.flush()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "provenance",
        help="test whether a checkpoint is a blend of candidate parents",
        description="Fit every tensor of CANDIDATE as a linear blend of the parents' tensors and report "
        "coefficients, residuals and a verdict (identical / blend / fine-tuned / unrelated).",
    )
    p.add_argument("candidate", help="checkpoint folder (or .safetensors file) to test")
    p.add_argument("--parent", action="append", required=True, metavar="PATH", help="a candidate parent (repeat for each)")
    p.add_argument("--quick", action="store_true", help="read a seeded sample of each tensor instead of everything")
    p.add_argument("--sample", type=int, default=65536, help="elements per tensor in --quick mode (default 65536)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --quick sample (default 0)")
    p.add_argument("--intercept", action="store_true", help="also fit a constant term per tensor")
    p.add_argument("--tensors", action="store_true", help="print one row per tensor, not just per layer")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot coefficients by layer and tensor type (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from rio_rt import RioError

    try:
        result = fit(
            args.candidate,
            args.parent,
            quick=args.quick,
            sample=args.sample,
            seed=args.seed,
            intercept=args.intercept,
            progress=None if args.no_progress else ProgressBar(),
        )
        if args.plot:
            plot(result, args.plot)
    except (RioError, ValueError, TypeError, ImportError) as e:
        print(f"rio-rt provenance: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.table(tensors=args.tensors))
    return 0
