"""The plain-text table of `rio-rt bench experts`."""
from __future__ import annotations

_PHASE_PEAK = {"decode": ("pct_of_floor", "% of read BW"), "prefill": ("pct_of_peak", "% of GEMM peak")}


def format_table(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"rio-rt bench experts: {doc['shape']['description']}, {doc['dtype']}, {m['threads']} threads, rio ISA {m['rio_isa']}",
        f"machine: read bandwidth {m['read_gb_s']:.1f} GB/s ({m['read_buffer_bytes'] / 2**30:.1f} GiB buffer); "
        f"bf16 GEMM peak {m['bf16_gemm_gflop_s']:.0f} GFLOP/s "
        f"(rio {m['rio_gemm_gflop_s']:.0f}, torch {_maybe(m.get('torch_gemm_gflop_s'))}; {m['gemm_size']}^3)",
        "  peaks, best of before / after the layers ran: read "
        + " / ".join(f"{s['read_gb_s']:.1f}" for s in m["samples"])
        + " GB/s; rio GEMM "
        + " / ".join(f"{s['rio_gemm_gflop_s']:.0f}" for s in m["samples"])
        + ", torch GEMM "
        + " / ".join(_maybe(s["torch_gemm_gflop_s"]) for s in m["samples"])
        + " GFLOP/s",
    ]
    load = m.get("load_average") or [None, None]
    if None not in load:
        busy = max(load) > m["threads"] + 0.5
        lines.append(
            f"load average (1 min): {load[0]:.1f} at start, {load[1]:.1f} at end"
            + (" -- other processes competed for the cores: timings are noisy" if busy else "")
        )
    flush = m["flush_bytes"]
    lines.append(
        f"timing: median of calls on fresh random inputs, warm-up excluded; "
        + (f"caches flushed before each call ({flush / 2**20:.0f} MiB read)" if flush else "caches not flushed between calls")
    )
    lines += [c["summary"] for c in doc["checks"]]
    for phase, (key, title) in _PHASE_PEAK.items():
        rows = [r for r in doc["rows"] if r["phase"] == phase]
        if not rows:
            continue
        header = f"{'system':<18}{phase:>8}{'tok/s':>11}{'ms':>10}{'experts':>9}{'GB/s':>9}{'GFLOP/s':>10}{title:>16}"
        lines += ["", header, "-" * len(header)]
        for r in sorted(rows, key=lambda r: (r["tokens"], r["system"] != "rio_rt", r["system"])):
            lines.append(
                f"{r['system']:<18}{r['tokens']:>8}{r['tok_s']:>11.1f}{r['ms']:>10.2f}{r['unique_experts']:>9.1f}"
                f"{r['gb_s']:>9.1f}{r['gflop_s']:>10.1f}{r[key]:>15.1f}%"
            )
    lines += [
        "",
        "GB/s: bytes of the distinct experts a call activates + router + shared expert, over the median call time;",
        "GFLOP/s: 2*tokens*(k*3*H*I + 3*H*I_s + E*H + H); decode is judged against read bandwidth, prefill against GEMM peak.",
    ]
    return "\n".join(lines)


def _maybe(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"
