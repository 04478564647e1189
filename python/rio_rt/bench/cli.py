"""``rio-rt bench ...`` subcommands."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rio_rt.bench.shapes import DTYPE_BYTES, NAMED_SHAPES, MoeShape

DEFAULT_SHAPE = "qwen3.5-35b"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    p.set_defaults(run=lambda args: p.print_help())
    benches = p.add_subparsers(dest="bench")
    _add_experts(benches)
    _add_decode(benches)
    __import__("rio_rt.bench.latent", fromlist=["add_parser"]).add_parser(benches)  # rio-rt bench latent (H2)


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
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the GPU kernels, bf16 (rio_rt.bench.experts_cuda)")
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

    if args.device == "cuda":
        from rio_rt.bench import experts_cuda

        res = experts_cuda.run([_shape(args, parser)], [] if args.no_decode else args.decode, [] if args.no_prefill else args.prefill,
                               use_torch=not args.no_torch, seed=args.seed)
        if args.json:
            print(json.dumps(res, indent=1))
        return 0

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


def _system_list(text: str) -> list[str]:
    from rio_rt.bench.decode import SYSTEM_ALIASES

    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in SYSTEM_ALIASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of rio, transformers, llama.cpp; got {text!r}")
    return list(dict.fromkeys(SYSTEM_ALIASES[n] for n in names))


def _add_decode(benches: argparse._SubParsersAction) -> None:
    from rio_rt.bench.checkpoint import DEFAULT_SHAPE, SHAPES

    p = benches.add_parser(
        "decode",
        help="a whole model: prefill and decode tokens/s in rio vs transformers vs llama.cpp, against this machine's peaks",
        description="Times prefill (each prompt length) and batch-1 decode of one checkpoint in rio_rt, transformers "
        "(bf16) and llama.cpp (llama-bench on a bf16 GGUF of the same weights), interleaved over --repeats rounds "
        "with the read bandwidth and bf16 GEMM peak measured in every round. Without --model, builds (once, cached) "
        "the benchmark checkpoint: random bf16 weights with the Qwen3.5-35B-A3B layer shapes, 4 layers, 32k vocab. "
        "llama.cpp needs benches/llama_cpp/build.sh (or --llama-bench and --gguf); unavailable systems are skipped "
        "with the reason.",
    )
    p.add_argument("--model", type=Path, help="checkpoint folder (default: the benchmark checkpoint, built under --cache-dir)")
    p.add_argument("--cache-dir", type=Path, default=Path("bench-results/checkpoints"), help="where the benchmark checkpoint is built (default bench-results/checkpoints)")
    p.add_argument("--shape", choices=list(SHAPES), default=DEFAULT_SHAPE, help=f"benchmark checkpoint shape, without --model (default {DEFAULT_SHAPE})")
    p.add_argument("--threads", type=_positive_int, help="threads for every system (default: one per core)")
    p.add_argument("--prompt-lengths", type=_int_list, default=[64, 512], help="prefill prompt lengths (default 64,512)")
    p.add_argument("--decode-tokens", type=_positive_int, default=64, help="tokens decoded one at a time per measurement (default 64)")
    p.add_argument("--decode-depth", type=_positive_int, help="prompt tokens prefilled before decoding (default: the first prompt length)")
    p.add_argument("--repeats", type=_positive_int, default=3, help="rounds over all systems (default 3); rows report the median")
    p.add_argument("--systems", type=_system_list, default=["rio_rt", "transformers", "llama.cpp"], help="comma-separated: rio,transformers,llama.cpp (default all)")
    p.add_argument("--llama-cpp-dir", type=Path, default=Path("bench-results/llama.cpp"), help="benches/llama_cpp/build.sh's output (default bench-results/llama.cpp)")
    p.add_argument("--llama-bench", type=Path, help="llama-bench binary (default: LLAMA_CPP_DIR/bin/llama-bench, else on PATH)")
    p.add_argument("--gguf", type=Path, help="bf16 GGUF of the same checkpoint (default MODEL/gguf/model-bf16.gguf, converted once)")
    p.add_argument("--peak-bytes", type=_positive_int, help="read-bandwidth buffer size (default: 2 GiB or 4x the last-level cache)")
    p.add_argument("--peak-seconds", type=_positive_float, default=1.0, help="time for each peak measurement (default 1)")
    p.add_argument("--gemm-size", type=_positive_int, default=2048, help="n of the n^3 bf16 GEMM peak problem (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts (and of the benchmark checkpoint's weights)")
    p.add_argument("--json", action="store_true", help="print the result document as JSON instead of the table")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the tokens/s per system (needs matplotlib)")
    p.set_defaults(run=lambda args: run_decode(args, p))


def run_decode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rio_rt.bench import checkpoint, decode, memory, plot
    from rio_rt.bench.progress import Progress

    if args.plot and not plot.matplotlib_available():
        parser.error("--plot: needs matplotlib, which is not installed (pip install matplotlib)")
    model = args.model
    if model is None:
        shape = checkpoint.SHAPES[args.shape]
        need = checkpoint.checkpoint_bytes(shape)
        free = shutil.disk_usage(args.cache_dir if args.cache_dir.exists() else Path.cwd()).free
        folder = args.cache_dir / checkpoint.checkpoint_dir_name(shape, args.seed)
        if not (folder / "model.safetensors").is_file() and need > free:
            parser.error(f"--cache-dir {args.cache_dir}: the benchmark checkpoint needs {need / 1e9:.1f} GB, {free / 1e9:.1f} GB is free")
        bar = Progress(100, sys.stderr)
        last = [-1]
        every = 1 if bar.tty else 5  # percent between redraws; a log gets one line per redraw

        def on_progress(done: int, total: int) -> None:
            pct = 100 * done // total // every * every
            if pct != last[0]:
                bar.done = pct
                bar.step(f"building the benchmark checkpoint ({total / 1e9:.2f} GB, once): {folder}")
                last[0] = pct

        model = checkpoint.ensure_checkpoint(args.cache_dir, args.shape, args.seed, on_progress)
        bar.close()
    elif not (model / "config.json").is_file():
        parser.error(f"--model {model}: no config.json there")
    cfg = decode.DecodeBenchConfig(
        model=model,
        threads=args.threads,
        prompt_lengths=args.prompt_lengths,
        decode_tokens=args.decode_tokens,
        decode_depth=args.decode_depth,
        repeats=args.repeats,
        systems=args.systems,
        gguf=args.gguf,
        llama_cpp_dir=args.llama_cpp_dir,
        llama_bench=args.llama_bench,
        read_buffer_bytes=args.peak_bytes or memory.default_read_buffer_bytes(),
        peak_seconds=args.peak_seconds,
        gemm_size=args.gemm_size,
        seed=args.seed,
    )
    try:
        doc = decode.run(cfg)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"rio-rt bench decode: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(decode.format_table(doc))
    if args.plot:
        decode.save_plot(doc, args.plot)
        print(f"plot saved to {args.plot}", file=sys.stderr)
    return 0
