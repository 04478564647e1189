"""Benchmark of ``rio_rt.provenance.fit``: full-mode reading speed against this machine's read
bandwidth, measured in the same run, and the time of quick mode.

Builds a synthetic bf16 checkpoint set (two parents and a candidate blended from them, each
``--gb`` GB, in 128 MiB tensors) in a temp folder, reads it once to put it in the page cache, then
times full mode ``--repeat`` times, each right after measuring the reference bandwidths (so each
ratio compares numbers taken under the same load), reports medians, and times quick mode once
with the files in the page cache and once after evicting them (``posix_fadvise(DONTNEED)`` on
these files only).
Reference bandwidths:

- ``read_gb_s``: ``rio_rt._rio_rt.measure_read_bandwidth`` (streaming read of an anonymous buffer
  on the worker pool), the floor the target refers to;
- ``mmap_read_gb_s``: numpy reading the same memory-mapped files (XOR of uint64 words) on as many
  threads, mapping them afresh as a fit does: what streaming these page-cached files costs,
  page-table set-up included.

    .venv/bin/python benches/bench_provenance.py [--gb 1.0] [--repeat 5] [--json] [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import rio_rt
from rio_rt import _rio_rt, provenance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from checkpoints import BF16, write_checkpoint  # noqa: E402

TENSOR_ELEMENTS = 64 << 20  # 128 MiB of bf16


def build(folder: Path, gb: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_tensors = max(1, round(gb * 1e9 / (2 * TENSOR_ELEMENTS)))
    a, b, c = {}, {}, {}
    for i in range(n_tensors):
        name = f"layers.{i}.mlp.experts.gate_up_proj"
        shape = (64, 1024, TENSOR_ELEMENTS // (64 * 1024))
        x = rng.standard_normal(shape, dtype=np.float32)
        y = rng.standard_normal(shape, dtype=np.float32)
        a[name], b[name] = x.astype(BF16), y.astype(BF16)
        c[name] = (0.6 * a[name].astype(np.float32) + 0.4 * b[name].astype(np.float32)).astype(BF16)
        del x, y
    for sub, t in (("a", a), ("b", b), ("c", c)):
        write_checkpoint(folder / sub, t, shards=max(1, n_tensors // 4))


def mmap_read_gb_s(folder: Path, threads: int) -> float:
    """Reads every byte of the memory-mapped files (XOR of uint64 words) on `threads` threads,
    mapping them afresh as a fit does: what plain streaming of these page-cached files costs."""
    files = sorted(folder.rglob("*.safetensors"))
    step = 8 << 20  # words per piece: 64 MiB

    def xor_piece(job):
        words, start = job
        return np.bitwise_xor.reduce(words[start : start + step])

    start = time.perf_counter()
    total = 0
    maps = [np.memmap(f, dtype=np.uint64, mode="r", shape=(os.path.getsize(f) // 8,)) for f in files]
    with ThreadPoolExecutor(threads) as pool:
        jobs = [(w, s) for w in maps for s in range(0, len(w), step)]
        list(pool.map(xor_piece, jobs))
    total = sum(w.nbytes for w in maps)
    del maps
    return total / 1e9 / (time.perf_counter() - start)


def evict(folder: Path) -> None:
    """Drops these files (only these) from the page cache, for a cold-read timing."""
    for f in folder.rglob("*.safetensors"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of each of the three checkpoints in GB")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sample", type=int, default=65536)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dir", type=Path, help="build the checkpoints here once and reuse them (default: a temp folder)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="rio_bench_prov_") as tmp:
        folder = args.dir or Path(tmp)
        t0 = time.perf_counter()
        if not (folder / "c").exists():
            build(folder, args.gb)
        build_s = time.perf_counter() - t0
        paths = [folder / "a", folder / "b"]
        provenance.fit(folder / "c", paths)  # warm the page cache
        threads = rio_rt.num_threads()
        # Rounds of (read bandwidth, mmap read, fit) measured back to back, so each ratio compares
        # numbers taken under the same load (other processes share these cores).
        rounds = []
        for _ in range(args.repeat):
            read = _rio_rt.measure_read_bandwidth(1 << 30, 0.5)
            mmap = mmap_read_gb_s(folder, threads)
            fit = provenance.fit(folder / "c", paths)
            assert fit.verdict.kind == "blend", fit.verdict.text
            rounds.append({"read_gb_s": read, "mmap_read_gb_s": mmap, "gb_s": fit.gb_per_s, "seconds": fit.seconds,
                           "pct_of_floor": 100 * fit.gb_per_s / read, "pct_of_mmap_read": 100 * fit.gb_per_s / mmap})
        median = lambda key: float(np.median([r[key] for r in rounds]))
        quick = provenance.fit(folder / "c", paths, quick=True, sample=args.sample)
        evict(folder)
        cold = provenance.fit(folder / "c", paths, quick=True, sample=args.sample)
        read_gb_s, mmap_gb_s = median("read_gb_s"), median("mmap_read_gb_s")
        rows = [
            {
                "system": "rio_rt",
                "phase": "full",
                "gb": fit.bytes_read / 1e9,
                "seconds": median("seconds"),
                "gb_s": median("gb_s"),
                "pct_of_floor": median("pct_of_floor"),
                "pct_of_mmap_read": median("pct_of_mmap_read"),
                "rounds": rounds,
            },
            {
                "system": "rio_rt",
                "phase": "quick",
                "gb": quick.bytes_read / 1e9,
                "seconds": quick.seconds,
                "sample": args.sample,
                "tensors": len(quick.tensors),
            },
            {
                "system": "rio_rt",
                "phase": "quick_cold",
                "gb": cold.bytes_read / 1e9,
                "seconds": cold.seconds,
                "sample": args.sample,
                "tensors": len(cold.tensors),
            },
        ]
        doc = {
            "bench": "provenance",
            "machine": {"threads": threads, "read_gb_s": read_gb_s, "mmap_read_gb_s": mmap_gb_s},
            "build_seconds": build_s,
            "rows": rows,
        }
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        f, q, c = rows
        print(f"{threads} threads; medians of {len(rounds)} rounds (read bandwidth, mmap read, full fit, back to back):")
        for i, r in enumerate(rounds):
            print(f"  round {i + 1}: read {r['read_gb_s']:5.2f} GB/s  mmap read {r['mmap_read_gb_s']:5.2f} GB/s  "
                  f"fit {r['gb_s']:5.2f} GB/s = {r['pct_of_floor']:3.0f}% of read, {r['pct_of_mmap_read']:3.0f}% of mmap read")
        print(f"full : {f['gb']:.2f} GB in {f['seconds']:.3f} s = {f['gb_s']:.2f} GB/s "
              f"({f['pct_of_floor']:.0f}% of read bandwidth {read_gb_s:.2f} GB/s, {f['pct_of_mmap_read']:.0f}% of mmap read)")
        print(f"quick: {q['tensors']} tensors x {q['sample']} elements in {q['seconds'] * 1e3:.1f} ms ({q['gb'] * 1e3:.1f} MB); "
              f"{c['seconds'] * 1e3:.1f} ms with the files evicted from the page cache")
    return 0


if __name__ == "__main__":
    sys.exit(main())
