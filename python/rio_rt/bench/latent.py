"""`rio-rt bench latent`: what latent reasoning costs per step, and a whole SwiReasoning run in
rio_rt vs the same algorithm over transformers.

1. Per step, in one process run on one checkpoint: the explicit decode step (greedy
   `Model.generate`, `(t(1 + n tokens) - t(1 token)) / n`), and the extra work a latent step adds
   on top of its forward (timed by the native `latent_step_cost` on the model's embedding table
   and a real logit row): softmax with entropy plus the soft embedding in each form, `full`
   (`pᵀE` over the vocabulary), `pruned` (the SwiReasoning default, skipped mass <= 1e-4) and
   `topk` (Soft Thinking's K = 10 concept). Reported as ms and as % of the explicit step. A
   Soft Thinking run with Cold Stop off (every step latent, top-k form) is timed as well, as a
   whole-loop check of the top-k figure.
2. A whole SwiReasoning generation (greedy, official defaults, `--steps` tokens, EOS ignored) in
   rio_rt and in the reference implementation over transformers (tests/reference_reasoning.py,
   a manual loop with `inputs_embeds` and transformers' cache, math in the model's dtype), on
   the same checkpoint and threads. Needs torch and transformers, and the repository's tests/
   folder; skipped with the reason otherwise.
"""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

import numpy as np

import rio_rt
from rio_rt import _rio_rt

REFERENCE = Path(__file__).resolve().parents[3] / "tests" / "reference_reasoning.py"
FORMS = ("full", "pruned", "topk")


@dataclass
class LatentBenchConfig:
    model: Path
    threads: Optional[int] = None
    steps: int = 32
    prompt_length: int = 16
    repeats: int = 3
    transformers: bool = True
    seed: int = 0


def _special_ids(model: rio_rt.Model) -> tuple[int, int]:
    """`<think>`/`</think>` from the tokenizer when the checkpoint has them, else two ordinary ids."""
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        think, end = tok.token_to_id("<think>"), tok.token_to_id("</think>")
        if think is not None and end is not None:
            return int(think), int(end)
    return 10, 11


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _load_reference():
    if not REFERENCE.is_file():
        raise FileNotFoundError(f"{REFERENCE} not found (the transformers reference lives in the repository's tests/)")
    spec = importlib.util.spec_from_file_location("reference_reasoning", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def run(cfg: LatentBenchConfig, progress: Optional[TextIO] = None) -> dict:
    def say(msg: str) -> None:
        if progress is not None:
            print(msg, file=progress, flush=True)

    if cfg.threads is not None:
        rio_rt.set_num_threads(cfg.threads)
    threads = rio_rt.num_threads()
    model = rio_rt.Model.from_pretrained(cfg.model)
    rng = np.random.default_rng(cfg.seed)
    prompt = rng.integers(100, model.vocab_size, cfg.prompt_length).tolist()
    think, end_think = _special_ids(model)
    rows: list[dict] = []
    skipped: list[dict] = []

    say("explicit decode steps ...")
    model.generate(prompt, max_new_tokens=2, ignore_eos=True)  # warm-up: pages in the weights
    t_one = _median_time(lambda: model.generate(prompt, max_new_tokens=1, ignore_eos=True), cfg.repeats)
    t_all = _median_time(lambda: model.generate(prompt, max_new_tokens=1 + cfg.steps, ignore_eos=True), cfg.repeats)
    step = max(t_all - t_one, 1e-9) / cfg.steps
    rows.append({"system": "rio_rt", "phase": "explicit_step", "tokens": cfg.steps, "tok_s": 1 / step, "ms": step * 1e3})

    logits = np.ascontiguousarray(model.forward(np.array(prompt))[-1], dtype=np.float32)
    for form in FORMS:
        say(f"latent extra work, {form} form ...")
        extra = statistics.median(_rio_rt.latent_step_cost(model._native, logits, form, repeats=10) for _ in range(cfg.repeats))
        rows.append({"system": "rio_rt", "phase": f"latent_extra_{form}", "tokens": 1, "ms": extra * 1e3,
                     "pct_of_step": 100 * extra / step})

    say("Soft Thinking, every step latent ...")
    soft = rio_rt.SoftThinking(end_think_token_id=end_think, cold_stop_entropy=0.0)
    s_one = _median_time(lambda: model.generate(prompt, max_new_tokens=1, ignore_eos=True, reasoning=soft), cfg.repeats)
    s_all = _median_time(lambda: model.generate(prompt, max_new_tokens=1 + cfg.steps, ignore_eos=True, reasoning=soft), cfg.repeats)
    soft_step = max(s_all - s_one, 1e-9) / cfg.steps
    rows.append({"system": "rio_rt", "phase": "soft_thinking_step", "tokens": cfg.steps, "tok_s": 1 / soft_step,
                 "ms": soft_step * 1e3, "pct_of_step": 100 * (soft_step - step) / step})

    say("SwiReasoning generation, rio_rt ...")
    swi = rio_rt.SwiReasoning(think_token_id=think, end_think_token_id=end_think, math_token_ids=())
    result = model.generate(prompt, max_new_tokens=cfg.steps, ignore_eos=True, reasoning=swi, trace=True)
    t_rio = _median_time(lambda: model.generate(prompt, max_new_tokens=cfg.steps, ignore_eos=True, reasoning=swi), cfg.repeats)
    latent_steps = sum(m == "latent" for m in result.trace.mode)
    rows.append({"system": "rio_rt", "phase": "swireasoning", "tokens": cfg.steps, "tok_s": cfg.steps / t_rio,
                 "seconds": t_rio, "latent_steps": latent_steps})

    if cfg.transformers:
        try:
            import torch
            from transformers import AutoModelForCausalLM

            reference = _load_reference()
        except Exception as e:  # an optional system: report why it is missing
            skipped.append({"system": "transformers", "reason": f"{type(e).__name__}: {e}"})
        else:
            say("SwiReasoning generation, transformers reference ...")
            torch.set_num_threads(threads)
            hf = AutoModelForCausalLM.from_pretrained(cfg.model, dtype="auto").eval()
            dtype = hf.dtype

            def hf_run():
                return reference.swireasoning(hf, prompt, max_new_tokens=cfg.steps, window=swi.window, think_id=think,
                                              end_think_id=end_think, eos_ids=[], alpha0=swi.alpha0, beta0=swi.beta0,
                                              dtype=dtype)

            hf_run()  # warm-up
            t_hf = _median_time(hf_run, cfg.repeats)
            rows.append({"system": "transformers", "phase": "swireasoning", "tokens": cfg.steps,
                         "tok_s": cfg.steps / t_hf, "seconds": t_hf})
    ratios = []
    by = {(r["system"], r["phase"]): r for r in rows}
    if ("transformers", "swireasoning") in by:
        ratios.append({"phase": "swireasoning", "rio_rt_over_transformers":
                       by[("rio_rt", "swireasoning")]["tok_s"] / by[("transformers", "swireasoning")]["tok_s"]})
    return {"bench": "latent", "machine": {"threads": threads}, "model": str(cfg.model), "rows": rows,
            "ratios": ratios, "skipped": skipped}


def format_table(doc: dict) -> str:
    lines = [f"rio-rt bench latent: {doc['model']} ({doc['machine']['threads']} threads)",
             f"{'system':<13} {'phase':<22} {'tokens':>6} {'ms/step':>9} {'tok/s':>8} {'% of explicit step':>19}"]
    for r in doc["rows"]:
        ms = r.get("ms", 1e3 * r["seconds"] / r["tokens"] if "seconds" in r else float("nan"))
        pct = f"{r['pct_of_step']:+.2f}%" if "pct_of_step" in r else ""
        tok_s = f"{r['tok_s']:.2f}" if "tok_s" in r else ""
        lines.append(f"{r['system']:<13} {r['phase']:<22} {r['tokens']:>6} {ms:>9.3f} {tok_s:>8} {pct:>19}")
    for q in doc["ratios"]:
        lines.append(f"SwiReasoning generation: rio_rt is {q['rio_rt_over_transformers']:.1f}x transformers")
    for s in doc["skipped"]:
        lines.append(f"skipped {s['system']}: {s['reason']}")
    return "\n".join(lines)


def add_parser(benches: Any) -> None:
    """Registers `rio-rt bench latent`."""
    from rio_rt.bench.checkpoint import DEFAULT_SHAPE, SHAPES

    p = benches.add_parser(
        "latent",
        help="latent reasoning: extra cost of a latent step (full/pruned/top-k) and SwiReasoning vs transformers",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("--model", type=Path, help="checkpoint folder (default: the decode benchmark checkpoint, built under --cache-dir)")
    p.add_argument("--cache-dir", type=Path, default=Path("bench-results/checkpoints"), help="where the benchmark checkpoint is built")
    p.add_argument("--shape", choices=list(SHAPES), default=DEFAULT_SHAPE, help=f"benchmark checkpoint shape, without --model (default {DEFAULT_SHAPE})")
    p.add_argument("--threads", type=int, help="threads for rio_rt and torch alike (default: one per core)")
    p.add_argument("--steps", type=int, default=32, help="tokens per timed generation (default 32)")
    p.add_argument("--prompt-length", type=int, default=16, help="random prompt tokens (default 16)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row; rows report the median (default 3)")
    p.add_argument("--no-transformers", action="store_true", help="skip the transformers reference run")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt (and of the benchmark checkpoint)")
    p.add_argument("--json", action="store_true", help="print the result document as JSON instead of the table")
    p.set_defaults(run=lambda args: _run_cli(args, p))


def _run_cli(args: Any, parser: Any) -> int:
    from rio_rt.bench import checkpoint

    for name in ("threads", "steps", "prompt_length", "repeats"):
        v = getattr(args, name)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')}: must be at least 1, got {v}")
    model = args.model
    if model is None:
        model = checkpoint.ensure_checkpoint(args.cache_dir, args.shape, args.seed)
    elif not (Path(model) / "config.json").is_file():
        parser.error(f"--model {model}: no config.json there")
    cfg = LatentBenchConfig(model=Path(model), threads=args.threads, steps=args.steps, prompt_length=args.prompt_length,
                            repeats=args.repeats, transformers=not args.no_transformers, seed=args.seed)
    doc = run(cfg, progress=sys.stderr)
    print(json.dumps(doc, indent=1) if args.json else format_table(doc))
    return 0
