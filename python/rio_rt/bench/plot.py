"""`--plot FILE.png`: rio vs torch vs the machine's peaks, drawn with matplotlib."""
from __future__ import annotations


def matplotlib_available() -> bool:
    """Checked before any measuring, so a missing plotter fails fast."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def save_plot(doc: dict, path: str) -> None:
    """Decode GB/s against the read bandwidth, prefill GFLOP/s against the GEMM peak, per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    machine = doc["machine"]
    panels = [
        ("decode", "gb_s", "GB/s of weights read", machine["read_gb_s"], "read bandwidth"),
        ("prefill", "gflop_s", "GFLOP/s", machine["bf16_gemm_gflop_s"], "bf16 GEMM peak"),
    ]
    panels = [p for p in panels if any(r["phase"] == p[0] for r in doc["rows"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (phase, key, ylabel, peak, peak_name) in zip(axes[0], panels):
        systems = sorted({r["system"] for r in doc["rows"] if r["phase"] == phase}, key=lambda s: (s != "rio_rt", s))
        for system in systems:
            rows = [r for r in doc["rows"] if r["phase"] == phase and r["system"] == system]
            ax.plot([r["tokens"] for r in rows], [r[key] for r in rows], marker="o", label=system)
        ax.axhline(peak, color="black", linestyle="--", label=f"{peak_name} {peak:.0f}")
        ax.set_xscale("log", base=2)
        ticks = sorted({r["tokens"] for r in doc["rows"] if r["phase"] == phase})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("tokens")
        ax.set_ylabel(ylabel)
        ax.set_title(phase)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"rio-rt bench experts: {doc['shape']['description']} {doc['dtype']}, {machine['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
