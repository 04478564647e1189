"""`rio-rt bench experts`: one MoE layer, rio vs torch, as a fraction of this machine's peaks.

Order of work: measure the peaks; build random weights (numpy, shared with torch); check rio's
output against a float64 reference and against torch; then time every (phase, tokens, system)
on fresh random inputs per call, warm-up call excluded, and report medians. Before every call a
buffer twice the last-level cache is read through (untimed), so each call starts with cold
caches, as it would in a model whose other layers ran in between.
"""
from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass, field, replace
from typing import TextIO

import numpy as np

import rio_rt
from rio_rt import _rio_rt
from rio_rt.bench import check, torch_layer
from rio_rt.bench.progress import Progress
from rio_rt.bench.shapes import DTYPE_BYTES, MoeShape, unique_experts
from rio_rt.bench.weights import LayerWeights, build_layer, random_inputs, to_float32

CHECK_TOKENS = 32
MIN_RUNS = 2


@dataclass
class ExpertsBenchConfig:
    shape: MoeShape
    dtype: str = "bf16"
    decode: list[int] = field(default_factory=lambda: [1, 8, 64])
    prefill: list[int] = field(default_factory=lambda: [512])
    threads: int | None = None
    use_torch: bool = True
    repeat: int = 10
    seconds: float = 1.0
    read_buffer_bytes: int = 2 << 30
    flush_bytes: int = 1 << 30  # 0: no flush between calls
    peak_seconds: float = 1.0
    gemm_size: int = 2048
    seed: int = 0


def _rio_layer(w: LayerWeights, top_k: int):
    shared = (w.shared_gate, w.shared_up, w.shared_down, w.shared_expert_gate) if w.has_shared else (None,) * 4
    return _rio_rt.MoeLayerBench(w.router, w.gate_up, w.down, top_k, w.dtype, *shared)


def _topk_unique(xs: np.ndarray, router32: np.ndarray, top_k: int, dtype: str) -> list[int]:
    """Distinct experts each batch `xs[r]` routes to (float32 logits; near-ties barely move a count)."""
    counts = []
    for x in xs:
        logits = to_float32(x, dtype) @ router32.T
        counts.append(unique_experts(np.argpartition(-logits, top_k - 1, axis=1)[:, :top_k]))
    return counts


def _peaks(cfg: ExpertsBenchConfig, progress: Progress, when: str) -> dict:
    """The machine's read bandwidth and bf16 GEMM rates (rio's kernel and torch.matmul)."""
    progress.step(f"{when}: read bandwidth ({cfg.read_buffer_bytes / 2**30:.1f} GiB buffer)")
    peaks = {"read_gb_s": _rio_rt.measure_read_bandwidth(cfg.read_buffer_bytes, cfg.peak_seconds)}
    n = cfg.gemm_size
    progress.step(f"{when}: rio bf16 GEMM peak ({n}^3)")
    peaks["rio_gemm_gflop_s"] = _rio_rt.measure_gemm_peak(n, n, n, cfg.peak_seconds)
    peaks["torch_gemm_gflop_s"] = None
    if cfg.use_torch:
        progress.step(f"{when}: torch bf16 GEMM peak ({n}^3)")
        peaks["torch_gemm_gflop_s"] = torch_layer.gemm_peak(n, cfg.peak_seconds)
    return peaks


def _machine(cfg: ExpertsBenchConfig, samples: list[dict]) -> dict:
    """Peaks measured before and after the layers ran: a peak is the best the machine showed, so
    the larger of the two counts (other processes may have held the cores during one of them)."""
    best = {k: max((s[k] for s in samples if s[k] is not None), default=None) for k in samples[0]}
    return {
        "threads": rio_rt.num_threads(),
        **best,
        "bf16_gemm_gflop_s": max(best["rio_gemm_gflop_s"], best["torch_gemm_gflop_s"] or 0.0),
        "samples": samples,
        "read_buffer_bytes": cfg.read_buffer_bytes,
        "flush_bytes": cfg.flush_bytes,
        "gemm_size": cfg.gemm_size,
        "rio_isa": rio_rt.cpu_features()["active_isa"],
    }


def _checks(cfg: ExpertsBenchConfig, w: LayerWeights, rio_layer, torch_systems: dict) -> list[check.CheckResult]:
    shape = cfg.shape
    rng = np.random.default_rng(cfg.seed + 1)
    x = random_inputs(rng, 1, CHECK_TOKENS, shape.hidden, cfg.dtype)[0]
    out = np.empty((CHECK_TOKENS, shape.hidden), dtype=np.float32)
    rio_layer.forward(x, out)
    ties = check.near_ties(check.router_logits(x, w), shape.top_k, cfg.dtype)
    tol = check.TOLERANCE[cfg.dtype]
    results = [check.compare(out, check.reference_forward(x, w, shape.top_k), ties, tol, "rio_rt", "numpy float64")]
    for name, system in torch_systems.items():
        want = system(x).float().numpy()
        results.append(check.compare(out, want, ties, tol, "rio_rt", name))
    return results


def run(cfg: ExpertsBenchConfig, progress_stream: TextIO | None = None) -> dict:
    """Runs the benchmark, drawing progress on `progress_stream` (stderr by default); returns the
    `--json` document. Raises `check.CheckFailed` when rio's output is wrong."""
    shape = cfg.shape
    if cfg.threads is not None:
        rio_rt.set_num_threads(cfg.threads)
    threads = rio_rt.num_threads()
    use_torch = cfg.use_torch and torch_layer.available()
    if use_torch:
        import torch

        torch.set_num_threads(threads)
    cfg = replace(cfg, use_torch=use_torch)
    systems = ["rio_rt"] + (list(torch_layer.IMPLEMENTATIONS) if use_torch else [])
    points = [("decode", t) for t in cfg.decode] + [("prefill", t) for t in cfg.prefill]
    # Steps: the peaks twice (2, or 3 with torch), weights, check, then one per point.
    progress = Progress(2 * (2 + use_torch) + 2 + len(points), progress_stream or sys.stderr)

    load_before = _load_average()
    peaks_before = _peaks(cfg, progress, "before")
    progress.step(f"random weights ({shape.experts * shape.expert_params() * DTYPE_BYTES[cfg.dtype] / 2**30:.2f} GiB)")
    w = build_layer(shape, cfg.dtype, cfg.seed)
    rio_layer = _rio_layer(w, shape.top_k)
    torch_systems = {name: torch_layer.TorchMoe(w, shape.top_k, impl) for name, impl in torch_layer.IMPLEMENTATIONS.items()} if use_torch else {}

    progress.step("checking rio against float64 numpy and torch")
    checks = _checks(cfg, w, rio_layer, torch_systems)
    bad = [c for c in checks if not c.ok]
    if bad:
        raise check.CheckFailed("; ".join(c.summary() for c in bad))

    flusher = _rio_rt.CacheFlusher(cfg.flush_bytes) if cfg.flush_bytes else None
    rng = np.random.default_rng(cfg.seed + 2)
    router32 = to_float32(w.router, cfg.dtype)
    timings = []
    for phase, tokens in points:
        progress.step(f"{phase} {tokens} tokens: {', '.join(systems)}")
        # One warm-up call, then up to `repeat` timed calls, each on its own fresh batch.
        xs = random_inputs(rng, cfg.repeat + 1, tokens, shape.hidden, cfg.dtype)
        uniques = _topk_unique(xs, router32, shape.top_k, cfg.dtype)
        timings.append((phase, tokens, uniques, _time_interleaved(cfg, xs, rio_layer, torch_systems, flusher)))
    del flusher  # frees its memory for the second peak measurement
    machine = _machine(cfg, [peaks_before, _peaks(cfg, progress, "after")])
    # Other processes share the cores and the memory bus: say how busy the machine was.
    machine["load_average"] = [load_before, _load_average()]
    progress.close()
    rows = []
    for phase, tokens, uniques, times in timings:
        for system in systems:
            timed = times[system][1:]
            rows.append(_row(system, phase, tokens, timed, uniques[1 : 1 + len(timed)], shape, cfg.dtype, machine))
    return {
        "bench": "experts",
        "shape": {
            "name": shape.name,
            "description": shape.describe(),
            "experts": shape.experts,
            "top_k": shape.top_k,
            "hidden": shape.hidden,
            "intermediate": shape.intermediate,
            "shared_intermediate": shape.shared_intermediate,
        },
        "dtype": cfg.dtype,
        "machine": machine,
        "checks": [{**c.to_dict(), "summary": c.summary()} for c in checks],
        "rows": rows,
    }


def _load_average() -> float | None:
    """The 1-minute load average, where the OS reports one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _time_interleaved(cfg: ExpertsBenchConfig, xs: np.ndarray, rio_layer, torch_systems: dict, flusher) -> dict[str, list[float]]:
    """Seconds per call of every system on `xs[0]`, `xs[1]`, ..., in rounds (each system runs
    input r before any runs r + 1) so a load change on the machine hits all systems alike. A
    system stops once it has run `MIN_RUNS` + 1 calls and `cfg.seconds` in total."""
    out = np.empty(xs.shape[1:], dtype=np.float32)
    calls = {"rio_rt": lambda x: rio_layer.time_forward(x, out, 0.0, 1, flusher)[0]}
    calls.update({name: (lambda x, m=m: m.time_call(x[0], flusher)) for name, m in torch_systems.items()})
    times: dict[str, list[float]] = {name: [] for name in calls}
    active = list(calls)
    for r in range(xs.shape[0]):
        for name in list(active):
            times[name].append(calls[name](xs[r : r + 1]))
            if len(times[name]) >= MIN_RUNS + 1 and sum(times[name]) >= cfg.seconds:
                active.remove(name)
        if not active:
            break
    return times


def _row(system: str, phase: str, tokens: int, times: list[float], uniques: list[int], shape: MoeShape, dtype: str, machine: dict) -> dict:
    seconds = statistics.median(times)
    experts = float(np.mean(uniques))
    gb_s = shape.weight_bytes(experts, dtype) / seconds / 1e9
    gflop_s = shape.flops(tokens) / seconds / 1e9
    row = {
        "system": system,
        "phase": phase,
        "tokens": tokens,
        "tok_s": tokens / seconds,
        "ms": seconds * 1e3,
        "best_ms": min(times) * 1e3,
        "runs": len(times),
        "unique_experts": experts,
        "gb_s": gb_s,
        "gflop_s": gflop_s,
    }
    if phase == "decode":
        row["pct_of_floor"] = 100.0 * gb_s / machine["read_gb_s"]
    else:
        row["pct_of_peak"] = 100.0 * gflop_s / machine["bf16_gemm_gflop_s"]
    return row
