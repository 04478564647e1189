"""``rio-rt bench ...`` subcommands."""
from __future__ import annotations

import argparse
import json
import sys

from rio_rt.bench.shapes import DTYPE_BYTES, NAMED_SHAPES, MoeShape

DEFAULT_SHAPE = "qwen3.5-35b"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    p.set_defaults(run=lambda args: p.print_help())
    benches = p.add_subparsers(dest="bench")
    _add_experts(benches)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token counts like 1,8,64, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"token counts must be positive, got {text!r}")
    return values


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def _add_experts(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser(
        "experts",
        help="one MoE layer: rio vs torch, decode and prefill, as %% of this machine's peaks",
        description="Times one MoE layer of random weights (decode and prefill batches) in rio_rt and, when "
        "installed, in transformers' torch implementations, after checking rio's output against them; "
        "reports tokens/s, GB/s of weights read, GFLOP/s and % of the read bandwidth / bf16 GEMM peak "
        "measured in the same run. The defaults (a 35B-shaped layer, a few batches) finish in about a minute.",
    )
    p.add_argument("--shape", choices=[*NAMED_SHAPES, "custom"], default=DEFAULT_SHAPE, help=f"layer shape (default {DEFAULT_SHAPE})")
    p.add_argument("--experts", type=_positive_int, help="E, with --shape custom")
    p.add_argument("--top-k", type=_positive_int, help="experts per token, with --shape custom")
    p.add_argument("--hidden", type=_positive_int, help="H, with --shape custom")
    p.add_argument("--intermediate", type=_positive_int, help="I (expert width), with --shape custom")
    p.add_argument("--shared-intermediate", type=_positive_int, help="I_s, with --shape custom (default: I)")
    p.add_argument("--shared-expert", action=argparse.BooleanOptionalAction, default=True, help="include the gated shared expert")
    p.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16", help="weight dtype (default bf16)")
    p.add_argument("--decode", type=_int_list, default=[1, 8, 64], help="decode batch sizes (default 1,8,64)")
    p.add_argument("--prefill", type=_int_list, default=[512], help="prefill token counts (default 512)")
    p.add_argument("--no-decode", action="store_true", help="skip decode rows")
    p.add_argument("--no-prefill", action="store_true", help="skip prefill rows")
    p.add_argument("--threads", type=_positive_int, help="threads for rio and torch alike (default: one per core)")
    p.add_argument("--no-torch", action="store_true", help="time rio only, even when torch is installed")
    p.add_argument("--repeat", type=_positive_int, default=10, help="at most this many timed calls per row (default 10)")
    p.add_argument("--seconds", type=_positive_float, default=1.0, help="stop a row's timing after this long, 3 calls at least (default 1)")
    p.add_argument("--peak-bytes", type=_positive_int, help="read-bandwidth buffer size (default: 2 GiB or 4x the last-level cache)")
    p.add_argument("--flush-bytes", type=_positive_int, help="bytes read between timed calls to evict the caches (default: 2x the last-level cache)")
    p.add_argument("--no-flush", action="store_true", help="time calls back to back, caches warm from the previous call")
    p.add_argument("--peak-seconds", type=_positive_float, default=1.0, help="time for each peak measurement (default 1)")
    p.add_argument("--gemm-size", type=_positive_int, default=2048, help="n of the n^3 bf16 GEMM peak problem (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    p.add_argument("--json", action="store_true", help="print the result document as JSON instead of the table")
    p.add_argument("--plot", metavar="FILE.png", help="also draw rio vs torch vs peak (needs matplotlib)")
    p.set_defaults(run=lambda args: run_experts(args, p))


def _shape(args: argparse.Namespace, parser: argparse.ArgumentParser) -> MoeShape:
    custom = {"experts": args.experts, "top_k": args.top_k, "hidden": args.hidden, "intermediate": args.intermediate}
    if args.shape != "custom":
        given = [f"--{k.replace('_', '-')}" for k, v in custom.items() if v is not None]
        if given or args.shared_intermediate is not None:
            parser.error(f"{', '.join(given) or '--shared-intermediate'}: only with --shape custom (got --shape {args.shape})")
        named = NAMED_SHAPES[args.shape]
        return named if args.shared_expert else MoeShape(**{**named.__dict__, "shared_intermediate": 0})
    missing = [f"--{k.replace('_', '-')}" for k, v in custom.items() if v is None]
    if missing:
        parser.error(f"--shape custom needs {', '.join(missing)}")
    shared = (args.shared_intermediate or args.intermediate) if args.shared_expert else 0
    try:
        return MoeShape("custom", shared_intermediate=shared, **custom)
    except ValueError as e:
        parser.error(str(e))


def run_experts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rio_rt.bench import experts, memory, plot
    from rio_rt.bench.check import CheckFailed

    if args.plot and not plot.matplotlib_available():
        parser.error("--plot: needs matplotlib, which is not installed (pip install matplotlib)")
    decode = [] if args.no_decode else args.decode
    prefill = [] if args.no_prefill else args.prefill
    if not decode and not prefill:
        parser.error("nothing to run: give --decode or --prefill batches")
    cfg = experts.ExpertsBenchConfig(
        shape=_shape(args, parser),
        dtype=args.dtype,
        decode=decode,
        prefill=prefill,
        threads=args.threads,
        use_torch=not args.no_torch,
        repeat=args.repeat,
        seconds=args.seconds,
        read_buffer_bytes=args.peak_bytes or memory.default_read_buffer_bytes(),
        flush_bytes=0 if args.no_flush else args.flush_bytes or memory.default_flush_bytes(),
        peak_seconds=args.peak_seconds,
        gemm_size=args.gemm_size,
        seed=args.seed,
    )
    weights = cfg.shape.experts * cfg.shape.expert_params() * DTYPE_BYTES[cfg.dtype]
    need = weights + max(cfg.flush_bytes, cfg.read_buffer_bytes)
    available = memory.available_memory_bytes()
    if available is not None and need > 0.9 * available:
        parser.error(f"--shape {cfg.shape.name}: needs {need / 2**30:.1f} GiB (weights + read/flush buffer), {available / 2**30:.1f} GiB is available")
    try:
        doc = experts.run(cfg)
    except CheckFailed as e:
        print(f"rio-rt bench experts: rio's output is wrong: {e}", file=sys.stderr)
        return 3
    except ValueError as e:  # e.g. a peak buffer bigger than memory: the message names the argument
        print(f"rio-rt bench experts: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        from rio_rt.bench.report import format_table

        print(format_table(doc))
    if args.plot:
        plot.save_plot(doc, args.plot)
        print(f"plot saved to {args.plot}", file=sys.stderr)
    return 0
