"""``rio-rt generate``: generate from a checkpoint folder, streaming the text to stdout.

The prompt goes through the checkpoint's chat template by default (when it has one), with
Qwen3.5's thinking switch; sampling values not given come from ``generation_config.json``
(see ``Model.generate``). Latent reasoning (``--reasoning swi|soft``) prints its trace table to
stderr and can save it (``--trace out.json``) or plot it (``--plot out.png``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Optional

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint folder (streams to stdout)",
                       description="Generate from a Qwen3.5-MoE / Qwen3-MoE checkpoint folder. The text streams to "
                                   "stdout; a summary (and a reasoning trace table) goes to stderr.")
    p.add_argument("--model", required=True, metavar="DIR", help="checkpoint folder")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the prompt text (a user message when the chat template is used)")
    prompt.add_argument("--prompt-ids", metavar="IDS", help="comma-separated token ids, fed as they are")
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="wrap --prompt in the chat template (default: when the checkpoint has one)")
    p.add_argument("--system", default=None, help="a system message (with --chat)")
    p.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="the chat template's enable_thinking switch (default: the template's own default)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="most tokens to generate (default 256)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: generation_config.json)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="sampling seed (same seed, same tokens)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="a stop string (repeatable)")
    p.add_argument("--stop-id", action="append", type=int, default=[], metavar="ID", help="a stop token id (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past EOS")
    p.add_argument("--reasoning", choices=("swi", "soft", "none"), default="none",
                   help="latent reasoning: swi = SwiReasoning, soft = Soft Thinking (default none)")
    p.add_argument("--window", type=int, default=None, help="SwiReasoning window W (default 512)")
    p.add_argument("--max-switch-count", type=int, default=None, help="SwiReasoning switch budget (default none)")
    p.add_argument("--trace", metavar="OUT.json", default=None, help="save the reasoning trace as JSON")
    p.add_argument("--plot", metavar="OUT.png", default=None, help="plot the reasoning trace (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON document at the end instead of streaming")
    p.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto", help="compute dtype")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: one per core)")
    p.set_defaults(run=run)


def _reasoning(args: argparse.Namespace) -> Any:
    import rio_rt

    if args.reasoning == "none":
        if args.window is not None or args.max_switch_count is not None:
            raise ValueError("--window and --max-switch-count need --reasoning swi")
        return None
    if args.reasoning == "soft":
        if args.window is not None or args.max_switch_count is not None:
            raise ValueError("--window and --max-switch-count are SwiReasoning settings (--reasoning swi)")
        return rio_rt.SoftThinking()
    kwargs: Dict[str, Any] = {}
    if args.window is not None:
        kwargs["window"] = args.window
    if args.max_switch_count is not None:
        kwargs["max_switch_count"] = args.max_switch_count
    return rio_rt.SwiReasoning(**kwargs)


def _prompt_ids(args: argparse.Namespace, tokenizer: Any) -> List[int]:
    if args.prompt_ids is not None:
        if args.chat or args.system is not None or args.thinking is not None:
            raise ValueError("--prompt-ids are fed as they are; --chat, --system and --thinking need --prompt")
        try:
            return [int(t) for t in args.prompt_ids.replace(" ", "").split(",") if t]
        except ValueError:
            raise ValueError(f"--prompt-ids: expected comma-separated integers, got {args.prompt_ids!r}") from None
    if tokenizer is None:
        raise ValueError(f"--prompt needs the checkpoint's tokenizer, and {args.model} has no tokenizer.json; "
                         "use --prompt-ids")
    chat = args.chat if args.chat is not None else tokenizer.chat_template is not None
    if not chat:
        if args.system is not None or args.thinking is not None:
            raise ValueError("--system and --thinking need the chat template (--chat)")
        return tokenizer.encode(args.prompt)
    messages = ([{"role": "system", "content": args.system}] if args.system is not None else []) + \
        [{"role": "user", "content": args.prompt}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=args.thinking)
    return tokenizer.encode(text, add_special_tokens=False)


def run(args: argparse.Namespace) -> int:
    import rio_rt

    try:
        return _generate(args)
    except (rio_rt.RioError, ValueError, TypeError, ImportError, OSError) as e:
        print(f"rio-rt generate: error: {e}", file=sys.stderr)
        return 2


def _generate(args: argparse.Namespace) -> int:
    import rio_rt

    if (args.trace or args.plot) and args.reasoning == "none":
        raise ValueError("--trace and --plot record a reasoning run: add --reasoning swi or --reasoning soft")
    reasoning = _reasoning(args)
    t0 = time.perf_counter()
    model = rio_rt.Model.from_pretrained(args.model, dtype=args.dtype, threads=args.threads)
    tokenizer = model.tokenizer
    ids = _prompt_ids(args, tokenizer)
    load_s = time.perf_counter() - t0
    options = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                   stop=[*args.stop_id, *args.stop] or None, ignore_eos=args.ignore_eos or None,
                   reasoning=reasoning, trace=reasoning is not None)

    t1 = time.perf_counter()
    first_token_s: Optional[float] = None
    if args.json:
        result = model.generate(ids, **options)
    else:
        events = model.stream(ids, **options)
        while True:
            try:
                event = next(events)
            except StopIteration as done:
                result = done.value
                break
            if first_token_s is None:
                first_token_s = time.perf_counter() - t1
            # Without a tokenizer there is no text: stream the ids.
            sys.stdout.write(event.text if event.text is not None else f"{event.token_id} ")
            sys.stdout.flush()
        sys.stdout.write("\n")
    gen_s = time.perf_counter() - t1
    n = len(result.token_ids)

    if result.trace is not None:
        if args.trace:
            with open(args.trace, "w") as f:
                json.dump(result.trace.to_dict(), f)
        if args.plot:
            rio_rt.plot_trace(result, args.plot)
    if args.json:
        doc = {"model": args.model, "prompt_ids": ids, "token_ids": result.token_ids, "text": result.text,
               "finish_reason": result.finish_reason, "logprobs": result.logprobs,
               "trace": None if result.trace is None else result.trace.to_dict(),
               "timing": {"load_s": load_s, "generate_s": gen_s, "tokens": n}}
        print(json.dumps(doc))
        return 0
    if result.trace is not None:
        decode = tokenizer.decode if tokenizer is not None else None
        print(result.trace.format_table(decode=decode), file=sys.stderr)
    rate = f", {n / gen_s:.1f} tokens/s" if gen_s > 0 else ""
    ttft = f", first token after {first_token_s:.2f} s" if first_token_s is not None else ""
    print(f"[{len(ids)} prompt tokens, {n} generated in {gen_s:.2f} s{rate}{ttft}; finish: {result.finish_reason}; "
          f"loaded in {load_s:.2f} s]", file=sys.stderr)
    return 0
