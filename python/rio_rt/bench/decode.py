"""`rio-rt bench decode`: a whole model's prefill and decode speed in rio_rt, transformers and llama.cpp.

All systems run the same checkpoint on the same threads, in one process run, interleaved: each
round measures the machine's read bandwidth and bf16 GEMM peak, then every system in turn
(prefill of each prompt length from an empty cache; then `decode_tokens` single-token steps
after a `decode_depth`-token prefill), so a change in the machine's load hits every system
alike. Rows report the median over the rounds.

- rio_rt: prefill `rio_rt.Model.forward` into a fresh cache; decode `rio_rt.Model.generate` (greedy,
  EOS ignored), timed between its first and last streamed token.
- transformers: `AutoModelForCausalLM` in bf16, `torch.set_num_threads(threads)`: prefill one call,
  decode one call per token with the returned cache, greedy (its fastest loop: no `generate` overhead).
- llama.cpp: `llama-bench` on a bf16 GGUF converted from the same checkpoint
  (benches/llama_cpp/build.sh builds both tools); one `-r 1` invocation per measurement, after
  llama-bench's own warm-up run, with random tokens as llama-bench draws them.

Decode is judged against the floor set by memory: bytes of weights one decode step reads
(`model_cost`) times tokens/s, as a % of the best read bandwidth measured in the run.
Prefill is judged against the bf16 GEMM peak (the better of rio's kernel and torch.matmul).
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TextIO

import numpy as np

import rio_rt
from rio_rt import _rio_rt
from rio_rt.bench import memory
from rio_rt.bench.progress import Progress

SYSTEMS = ("rio_rt", "transformers", "llama.cpp")
SYSTEM_ALIASES = {"rio": "rio_rt", "rio_rt": "rio_rt", "transformers": "transformers", "torch": "transformers",
                  "llama.cpp": "llama.cpp", "llama-cpp": "llama.cpp", "llamacpp": "llama.cpp"}
# A benchmark repository's default llama.cpp build folder (benches/llama_cpp/build.sh).
DEFAULT_LLAMA_CPP_DIR = Path("bench-results/llama.cpp")
CONVERT_SCRIPT = Path(__file__).resolve().parents[3] / "benches" / "llama_cpp" / "convert.py"


@dataclass
class DecodeBenchConfig:
    model: Path
    threads: Optional[int] = None
    prompt_lengths: list[int] = field(default_factory=lambda: [64, 512])
    decode_tokens: int = 64
    decode_depth: Optional[int] = None  # default: the first prompt length
    repeats: int = 3
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    gguf: Optional[Path] = None  # default: MODEL/gguf/model-bf16.gguf, converted when a converter is found
    llama_cpp_dir: Path = DEFAULT_LLAMA_CPP_DIR
    llama_bench: Optional[Path] = None  # default: LLAMA_CPP_DIR/bin/llama-bench, else llama-bench on PATH
    read_buffer_bytes: int = 2 << 30
    peak_seconds: float = 1.0
    gemm_size: int = 2048
    seed: int = 0

    @property
    def depth(self) -> int:
        return self.decode_depth if self.decode_depth is not None else self.prompt_lengths[0]


class SystemUnavailable(RuntimeError):
    """A system cannot run here; the message says why (reported as a skipped system)."""


# ---- the model's cost per token, from config.json and the safetensors headers ------------------


@dataclass(frozen=True)
class ModelCost:
    """What one token costs in weights: bytes read by a batch-1 decode step, FLOPs of a prefill token."""

    bytes_per_token: int  # dense tensors + top_k/E of the expert tensors + one embedding row + lm_head
    prefill_flops_per_token: int  # 2 * the weights above, lm_head and embedding excluded (lm_head: per prompt)
    lm_head_flops: int  # 2 * lm_head params: once per prompt (logits of the last position only)
    checkpoint_bytes: int
    vocab: int
    top_k: int
    experts: int
    description: str


def _text_config(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    return config.get("text_config", config)


def _safetensors_headers(folder: Path) -> dict[str, dict]:
    """Every tensor's header entry (dtype, shape), over one file or a sharded index."""
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    out: dict[str, dict] = {}
    for name in files:
        with open(folder / name, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        out.update(header)
    return out


_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "I8": 1, "F8_E4M3": 1}


def model_cost(folder: Path) -> ModelCost:
    """Spec section 7's accounting for any Qwen3.5-MoE / Qwen3-MoE checkpoint folder (vision and
    MTP tensors skipped: decoding never reads them). State traffic (GDN state, KV cache) is not
    counted: a few MB per token at the benchmark's lengths."""
    cfg = _text_config(folder)
    experts, top_k, vocab = int(cfg["num_experts"]), int(cfg["num_experts_per_tok"]), int(cfg["vocab_size"])
    per_token = total = flops = lm_head = 0
    for name, t in _safetensors_headers(folder).items():
        if ".visual." in name or name.startswith(("mtp.", "model.visual.", "visual.")):
            continue
        count = int(np.prod(t["shape"]))
        nbytes = count * _DTYPE_BYTES[t["dtype"]]
        total += nbytes
        if ".experts." in name or name.endswith((".experts.gate_up_proj", ".experts.down_proj")):
            per_token += nbytes * top_k // experts
            flops += 2 * count * top_k // experts
        elif name.endswith("embed_tokens.weight"):
            per_token += nbytes // vocab
        elif name.startswith("lm_head."):
            per_token += nbytes
            lm_head += 2 * count
        else:
            per_token += nbytes
            flops += 2 * count if len(t["shape"]) >= 2 else 0
    layers = cfg["num_hidden_layers"]
    description = f"{cfg.get('model_type', '?')}: {layers} layers, hidden {cfg['hidden_size']}, {experts} experts top-{top_k}, vocab {vocab}"
    return ModelCost(per_token, flops, lm_head, total, vocab, top_k, experts, description)


# ---- the systems -------------------------------------------------------------------------------


class RioSystem:
    """rio_rt's model: prefill = one forward of the prompt into a fresh cache; decode = `generate`'s loop."""

    name = "rio_rt"

    def __init__(self, cfg: DecodeBenchConfig):
        self.cfg = cfg
        self.model = None

    def load(self) -> None:
        if self.model is None:
            self.model = rio_rt.Model.from_pretrained(self.cfg.model, dtype="auto", threads=self.cfg.threads)

    def close(self) -> None:
        self.model = None

    def last_logits(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.forward(ids, cache=self.model.new_cache(), logits_to_keep=1))[-1]

    def prefill_seconds(self, ids: np.ndarray) -> float:
        cache = self.model.new_cache()
        start = time.perf_counter()
        self.model.forward(ids, cache=cache, logits_to_keep=1)
        return time.perf_counter() - start

    def decode_seconds(self, prompt: np.ndarray, tokens: int) -> float:
        """`Model.generate`, greedy, `tokens` + 1 new tokens: the first comes from the prefill, so
        the time from the first streamed token to the last is `tokens` decode steps."""
        stamps: list[float] = []
        self.model.generate(prompt, max_new_tokens=tokens + 1, temperature=0.0, ignore_eos=True,
                            stream=lambda event: stamps.append(time.perf_counter()))
        if len(stamps) != tokens + 1:
            raise RuntimeError(f"rio_rt generate streamed {len(stamps)} tokens, expected {tokens + 1}")
        return stamps[-1] - stamps[0]


class TransformersSystem:
    """transformers' `Qwen3_5MoeForCausalLM` (whatever `AutoModelForCausalLM` picks) in bf16."""

    name = "transformers"

    def __init__(self, cfg: DecodeBenchConfig, threads: int):
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as e:
            raise SystemUnavailable(f"not installed ({e.name}); pip install torch transformers") from None
        self.cfg = cfg
        self.threads = threads
        self.model = None

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        need = model_cost(self.cfg.model).checkpoint_bytes  # transformers holds a bf16 copy of every weight
        available = memory.available_memory_bytes()
        if available is not None and need > 0.9 * available:
            raise SystemUnavailable(f"needs {need / 1e9:.1f} GB of memory for its copy of the weights, {available / 1e9:.1f} GB is available")
        torch.set_num_threads(self.threads)
        hf_logging.set_verbosity_error()  # the fallback-kernel notices are known: torch's reference GDN is the peer here
        try:
            self.model = AutoModelForCausalLM.from_pretrained(self.cfg.model, dtype=torch.bfloat16).eval()
        except (ValueError, KeyError) as e:
            raise SystemUnavailable(f"transformers cannot load {self.cfg.model}: {e}") from None

    def close(self) -> None:
        self.model = None
        gc.collect()

    def _forward(self, ids: np.ndarray, cache=None):
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(ids)[None], past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out

    def last_logits(self, ids: np.ndarray) -> np.ndarray:
        return self._forward(ids).logits[0, -1].float().numpy()

    def prefill_seconds(self, ids: np.ndarray) -> float:
        start = time.perf_counter()
        self._forward(ids)
        return time.perf_counter() - start

    def decode_seconds(self, prompt: np.ndarray, tokens: int) -> float:
        out = self._forward(prompt)
        cache = out.past_key_values
        token = np.empty(1, dtype=np.int64)
        start = time.perf_counter()
        for _ in range(tokens):
            token[0] = int(out.logits[0, -1].argmax())
            out = self._forward(token, cache)
        return time.perf_counter() - start


class LlamaCppSystem:
    """`llama-bench -r 1 -o json` per measurement; its timings (ns) are what is reported."""

    name = "llama.cpp"

    def __init__(self, cfg: DecodeBenchConfig, threads: int, gguf: Path, llama_bench: Path):
        self.cfg = cfg
        self.threads = threads
        self.gguf = gguf
        self.llama_bench = llama_bench

    def load(self) -> None:  # llama-bench maps the GGUF itself, per invocation
        pass

    def close(self) -> None:
        pass

    def _run(self, prompt: int, gen: int, depth: int) -> float:
        cmd = [str(self.llama_bench), "-m", str(self.gguf), "-p", str(prompt), "-n", str(gen), "-d", str(depth),
               "-t", str(self.threads), "-r", "1", "-o", "json"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"llama-bench failed ({' '.join(cmd)}): exit {proc.returncode}: {tail}")
        results = json.loads(proc.stdout)
        return sum(results[0]["samples_ns"]) / 1e9

    def last_logits(self, ids: np.ndarray) -> None:  # llama-bench prints timings only
        return None

    # llama-bench draws its own random tokens: only the lengths of `ids` and `prompt` are used.
    def prefill_seconds(self, ids: np.ndarray) -> float:
        return self._run(len(ids), 0, 0)

    def decode_seconds(self, prompt: np.ndarray, tokens: int) -> float:
        return self._run(0, tokens, len(prompt))

    def version(self) -> str:
        proc = subprocess.run([str(self.llama_bench), "--version"], capture_output=True, text=True)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"


def find_llama_bench(cfg: DecodeBenchConfig) -> Path:
    if cfg.llama_bench is not None:
        if not os.access(cfg.llama_bench, os.X_OK):
            raise SystemUnavailable(f"--llama-bench {cfg.llama_bench}: not an executable file")
        return Path(cfg.llama_bench)
    built = cfg.llama_cpp_dir / "bin" / "llama-bench"
    if os.access(built, os.X_OK):
        return built
    on_path = shutil.which("llama-bench")
    if on_path:
        return Path(on_path)
    raise SystemUnavailable(f"no llama-bench in {built} or on PATH: run benches/llama_cpp/build.sh (or pass --llama-bench)")


def default_gguf_path(model: Path) -> Path:
    return Path(model) / "gguf" / "model-bf16.gguf"


def ensure_gguf(cfg: DecodeBenchConfig, stream: Optional[TextIO] = None) -> Path:
    """The bf16 GGUF of the checkpoint: `--gguf`, or MODEL/gguf/model-bf16.gguf, converted once
    with the llama.cpp build's converter (benches/llama_cpp/convert.py) when absent."""
    if cfg.gguf is not None:
        if not Path(cfg.gguf).is_file():
            raise SystemUnavailable(f"--gguf {cfg.gguf}: no such file")
        return Path(cfg.gguf)
    out = default_gguf_path(cfg.model)
    if out.is_file():
        return out
    convert_dir = cfg.llama_cpp_dir / "convert"
    if not (convert_dir / "convert_hf_to_gguf.py").is_file() or not CONVERT_SCRIPT.is_file():
        raise SystemUnavailable(f"no GGUF at {out} and no converter in {convert_dir}: run benches/llama_cpp/build.sh (or pass --gguf)")
    if stream is not None:
        print(f"converting the checkpoint to a bf16 GGUF (once, a few minutes): {out}", file=stream, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_name("convert.log")
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(CONVERT_SCRIPT), str(convert_dir), str(cfg.model), str(out)], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemUnavailable(f"GGUF conversion failed (exit {proc.returncode}); see {log}")
    return out


# ---- the run -----------------------------------------------------------------------------------


def _peaks(cfg: DecodeBenchConfig, use_torch: bool) -> dict:
    """Read bandwidth and bf16 GEMM rates now, with the load average (how busy the machine was)."""
    peaks = {"load_average": _load_average(), "read_gb_s": _rio_rt.measure_read_bandwidth(cfg.read_buffer_bytes, cfg.peak_seconds)}
    n = cfg.gemm_size
    peaks["rio_gemm_gflop_s"] = _rio_rt.measure_gemm_peak(n, n, n, cfg.peak_seconds)
    peaks["torch_gemm_gflop_s"] = None
    if use_torch:
        from rio_rt.bench import torch_layer

        peaks["torch_gemm_gflop_s"] = torch_layer.gemm_peak(n, cfg.peak_seconds)
    return peaks


def _load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _make_systems(cfg: DecodeBenchConfig, threads: int, stream: TextIO) -> tuple[list, list[dict], dict]:
    systems, skipped, llama_info = [], [], {}
    for name in cfg.systems:
        try:
            if name == "rio_rt":
                systems.append(RioSystem(cfg))
            elif name == "transformers":
                systems.append(TransformersSystem(cfg, threads))
            elif name == "llama.cpp":
                bench = find_llama_bench(cfg)
                gguf = ensure_gguf(cfg, stream)
                system = LlamaCppSystem(cfg, threads, gguf, bench)
                llama_info = {"llama_bench": str(bench), "gguf": str(gguf), "version": system.version()}
                version_file = bench.parent.parent / "VERSION"
                if version_file.is_file():
                    llama_info["source"] = version_file.read_text().strip()
                systems.append(system)
        except SystemUnavailable as e:
            skipped.append({"system": name, "reason": str(e)})
    return systems, skipped, llama_info


def _release_if_short_of_memory(system, cost: ModelCost) -> None:
    """In-process systems hold their weights; when another copy would not fit in memory, release
    this one after its turn (it is reloaded, untimed, next round)."""
    available = memory.available_memory_bytes()
    if available is not None and available < 2 * cost.checkpoint_bytes:
        system.close()


def _warm_up(systems: list, skipped: list[dict], cfg: DecodeBenchConfig, cost: ModelCost, rng: np.random.Generator, progress: Progress) -> dict:
    """Loads each system and runs it once untimed (a prompt as long as the longest routes to most
    experts, so their pages are read in); compares rio's and transformers' logits on one prompt."""
    check_ids = _random_ids(rng, cost, cfg.prompt_lengths[0])
    longest = _random_ids(rng, cost, max(cfg.prompt_lengths))
    logits = {}
    for system in list(systems):
        progress.step(f"warm-up: {system.name}")
        try:
            system.load()
            logits[system.name] = system.last_logits(check_ids)
            system.prefill_seconds(longest)
            system.decode_seconds(check_ids, 2)
        except (SystemUnavailable, RuntimeError) as e:
            systems.remove(system)
            system.close()
            skipped.append({"system": system.name, "reason": str(e)})
            continue
        _release_if_short_of_memory(system, cost)
    if logits.get("rio_rt") is None or logits.get("transformers") is None:
        return {}
    a, b = logits["rio_rt"].astype(np.float64), logits["transformers"].astype(np.float64)
    return {"rio_vs_transformers_max_abs_logit_diff": float(np.max(np.abs(a - b))), "logit_scale": float(np.max(np.abs(b))),
            "argmax_agree": bool(np.argmax(a) == np.argmax(b)), "tokens": len(check_ids)}


def _random_ids(rng: np.random.Generator, cost: ModelCost, n: int) -> np.ndarray:
    """Random prompt tokens, special tokens (the last ids) excluded."""
    return rng.integers(0, cost.vocab - 8, n).astype(np.int64)


def _measure_round(system, r: int, cfg: DecodeBenchConfig, cost: ModelCost, rng: np.random.Generator, progress: Progress,
                   times: dict[tuple[str, str, int], list[float]]) -> None:
    """One round of one system: prefill at each prompt length, then decode; seconds appended to `times`."""
    system.load()
    for p in cfg.prompt_lengths:
        progress.step(f"round {r + 1}/{cfg.repeats}: {system.name} prefill {p}")
        times.setdefault((system.name, "prefill", p), []).append(system.prefill_seconds(_random_ids(rng, cost, p)))
    progress.step(f"round {r + 1}/{cfg.repeats}: {system.name} decode {cfg.decode_tokens} after {cfg.depth}")
    seconds = system.decode_seconds(_random_ids(rng, cost, cfg.depth), cfg.decode_tokens)
    times.setdefault((system.name, "decode", cfg.decode_tokens), []).append(seconds)


def run(cfg: DecodeBenchConfig, progress_stream: Optional[TextIO] = None) -> dict:
    """Runs the benchmark (progress on `progress_stream`, stderr by default); returns the `--json` document."""
    cfg.model = Path(cfg.model)
    cost = model_cost(cfg.model)
    if cfg.threads is not None:
        rio_rt.set_num_threads(cfg.threads)
    threads = rio_rt.num_threads()
    rng = np.random.default_rng(cfg.seed)
    stream = progress_stream or sys.stderr
    print(f"{cost.description}: {cost.bytes_per_token:,} bytes of weights read per decoded token", file=stream, flush=True)
    systems, skipped, llama_info = _make_systems(cfg, threads, stream)
    # Steps: warm-up per system, per round (peaks + per system: each prompt and decode), final peaks.
    per_system = len(cfg.prompt_lengths) + 1
    progress = Progress(len(systems) + cfg.repeats * (1 + len(systems) * per_system) + 1, stream)
    use_torch = any(s.name == "transformers" for s in systems)
    load_before = _load_average()
    check = _warm_up(systems, skipped, cfg, cost, rng, progress)

    samples: list[dict] = []
    times: dict[tuple[str, str, int], list[float]] = {}
    for r in range(cfg.repeats):
        progress.step(f"round {r + 1}/{cfg.repeats}: read bandwidth and bf16 GEMM peak")
        samples.append(_peaks(cfg, use_torch))
        for system in list(systems):
            try:
                _measure_round(system, r, cfg, cost, rng, progress, times)
            except RuntimeError as e:  # e.g. llama-bench exiting: keep the other systems and the earlier rounds
                systems.remove(system)
                system.close()
                skipped.append({"system": system.name, "reason": f"failed in round {r + 1}: {e}"})
                continue
            _release_if_short_of_memory(system, cost)
    for system in systems:
        system.close()
    progress.step("final read bandwidth and bf16 GEMM peak")
    samples.append(_peaks(cfg, use_torch))
    progress.close()

    machine = _machine(cfg, samples, threads)
    machine["load_average"] = [load_before, _load_average()]
    rows = [_row(name, phase, tokens, secs, cost, cfg, machine) for (name, phase, tokens), secs in times.items()]
    return {
        "bench": "decode",
        "model": {"path": str(cfg.model), "description": cost.description, "bytes_per_token": cost.bytes_per_token,
                  "checkpoint_bytes": cost.checkpoint_bytes, "prefill_flops_per_token": cost.prefill_flops_per_token,
                  "lm_head_flops": cost.lm_head_flops},
        "settings": {"prompt_lengths": cfg.prompt_lengths, "decode_tokens": cfg.decode_tokens, "decode_depth": cfg.depth,
                     "repeats": cfg.repeats, "systems": cfg.systems, "seed": cfg.seed},
        "machine": machine,
        "check": check,
        "llama_cpp": llama_info,
        "rows": rows,
        "ratios": _ratios(rows),
        "skipped": skipped,
    }


def _machine(cfg: DecodeBenchConfig, samples: list[dict], threads: int) -> dict:
    """The best of each peak over the rounds: a peak is what the machine can do, so other
    processes holding the cores during one sample must not lower it."""
    best = {k: max((s[k] for s in samples if s[k] is not None), default=None) for k in samples[0] if k != "load_average"}
    return {
        "threads": threads,
        **best,
        "bf16_gemm_gflop_s": max(best["rio_gemm_gflop_s"], best["torch_gemm_gflop_s"] or 0.0),
        "samples": samples,
        "read_buffer_bytes": cfg.read_buffer_bytes,
        "gemm_size": cfg.gemm_size,
        "rio_isa": rio_rt.cpu_features()["active_isa"],
        "cpu": _cpu_name(),
        "versions": _versions(),
    }


def _cpu_name() -> Optional[str]:
    """The CPU model Linux reports (None elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _versions() -> dict:
    """Versions of the systems compared (llama.cpp's is in the document's `llama_cpp`)."""
    from importlib import metadata

    out = {"rio_rt": rio_rt.__version__, "numpy": np.__version__}
    for name in ("torch", "transformers"):
        try:
            out[name] = metadata.version(name)  # without importing it
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _row(system: str, phase: str, tokens: int, seconds: list[float], cost: ModelCost, cfg: DecodeBenchConfig, machine: dict) -> dict:
    median = statistics.median(seconds)
    tok_s = tokens / median
    row = {
        "system": system,
        "phase": phase,
        "tokens": tokens,
        "tok_s": tok_s,
        "best_tok_s": tokens / min(seconds),
        "samples_tok_s": [tokens / s for s in seconds],
        "runs": len(seconds),
        "ms_per_token": 1e3 * median / tokens,
        "gb_s": None,
        "pct_of_floor": None,
        "gflop_s": None,
        "pct_of_peak": None,
    }
    if phase == "decode":
        row["depth"] = cfg.depth
        row["gb_s"] = cost.bytes_per_token * tok_s / 1e9
        row["pct_of_floor"] = 100.0 * row["gb_s"] / machine["read_gb_s"]
    else:
        flops = cost.prefill_flops_per_token * tokens + cost.lm_head_flops
        row["gflop_s"] = flops / median / 1e9
        row["pct_of_peak"] = 100.0 * row["gflop_s"] / machine["bf16_gemm_gflop_s"]
    return row


def _ratios(rows: list[dict]) -> list[dict]:
    """rio_rt's tokens/s over each other system's, per (phase, tokens)."""
    by_key = {(r["system"], r["phase"], r["tokens"]): r["tok_s"] for r in rows}
    out = []
    for (system, phase, tokens), tok_s in by_key.items():
        rio = by_key.get(("rio_rt", phase, tokens))
        if system != "rio_rt" and rio is not None:
            out.append({"phase": phase, "tokens": tokens, "vs": system, "ratio": rio / tok_s})
    return out


# ---- report ------------------------------------------------------------------------------------


def format_table(doc: dict) -> str:
    m, model = doc["machine"], doc["model"]
    s = doc["settings"]
    floor_tok_s = m["read_gb_s"] * 1e9 / model["bytes_per_token"]
    lines = [
        f"rio-rt bench decode: {model['description']} ({model['path']})",
        f"weights read per decoded token: {model['bytes_per_token']:,} bytes ({model['bytes_per_token'] / 1e9:.3f} GB); "
        f"checkpoint {model['checkpoint_bytes'] / 1e9:.2f} GB",
        f"machine: {m['threads']} threads, rio ISA {m['rio_isa']}; read bandwidth {m['read_gb_s']:.1f} GB/s (best of "
        + " / ".join(f"{x['read_gb_s']:.1f}" for x in m["samples"])
        + f"): decode floor {floor_tok_s:.1f} tok/s; bf16 GEMM peak {m['bf16_gemm_gflop_s']:.0f} GFLOP/s",
        f"{s['repeats']} rounds, systems interleaved; median per row; decode = {s['decode_tokens']} tokens after a {s['decode_depth']}-token prefill",
    ]
    load = m.get("load_average") or [None, None]
    if None not in load:
        busy = max(load) > m["threads"] + 0.5
        lines.append(f"load average (1 min): {load[0]:.1f} at start, {load[1]:.1f} at end"
                     + (" -- other processes competed for the cores: timings are noisy" if busy else ""))
    if doc.get("check"):
        c = doc["check"]
        lines.append(f"check: rio vs transformers last-position logits on a {c['tokens']}-token prompt: max |diff| "
                     f"{c['rio_vs_transformers_max_abs_logit_diff']:.3g} (logits up to {c['logit_scale']:.3g}), argmax "
                     + ("agrees" if c["argmax_agree"] else "DIFFERS"))
    if doc.get("llama_cpp"):
        lines.append(f"llama.cpp: {doc['llama_cpp'].get('source', '')} {doc['llama_cpp'].get('version', '')}".rstrip())
    ratio = {(r["phase"], r["tokens"], r["vs"]): r["ratio"] for r in doc["ratios"]}
    for phase, key, title in (("prefill", "pct_of_peak", "% GEMM peak"), ("decode", "pct_of_floor", "% of floor")):
        rows = [r for r in doc["rows"] if r["phase"] == phase]
        if not rows:
            continue
        header = f"{'system':<14}{phase:>8}{'tok/s':>10}{'best':>10}{'ms/tok':>9}{'GB/s' if phase == 'decode' else 'GFLOP/s':>9}{title:>13}{'rio/llama':>11}{'rio/tf':>9}"
        lines += ["", header, "-" * len(header)]
        for r in sorted(rows, key=lambda r: (r["tokens"], SYSTEMS.index(r["system"]))):
            rate = r["gb_s"] if phase == "decode" else r["gflop_s"]
            vs_llama = ratio.get((phase, r["tokens"], "llama.cpp")) if r["system"] == "rio_rt" else None
            vs_tf = ratio.get((phase, r["tokens"], "transformers")) if r["system"] == "rio_rt" else None
            lines.append(
                f"{r['system']:<14}{r['tokens']:>8}{r['tok_s']:>10.1f}{r['best_tok_s']:>10.1f}{r['ms_per_token']:>9.2f}{rate:>9.1f}"
                f"{r[key]:>12.1f}%{_ratio(vs_llama):>11}{_ratio(vs_tf):>9}"
            )
    for s_ in doc["skipped"]:
        lines.append(f"skipped {s_['system']}: {s_['reason']}")
    lines += [
        "",
        "decode GB/s: weights read per token x tok/s; % of floor: of the best read bandwidth measured in this run.",
        "prefill GFLOP/s: 2 x weights used per token (lm_head once per prompt; attention scores not counted), % of the bf16 GEMM peak.",
    ]
    return "\n".join(lines)


def _ratio(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.2f}x"


def save_plot(doc: dict, path: str) -> None:
    """Prefill tok/s per prompt length and decode tok/s per system, with the decode floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    groups = [("prefill", t) for t in sorted({r["tokens"] for r in rows if r["phase"] == "prefill"})]
    groups += [("decode", t) for t in sorted({r["tokens"] for r in rows if r["phase"] == "decode"})]
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 4.2), squeeze=False)
    m = doc["machine"]
    for ax, (phase, tokens) in zip(axes[0], groups):
        got = [next((r for r in rows if r["system"] == s and r["phase"] == phase and r["tokens"] == tokens), None) for s in systems]
        values = [r["tok_s"] if r else 0.0 for r in got]
        bars = ax.bar(systems, values, color=["C0", "C1", "C2"][: len(systems)])
        for bar, r in zip(bars, got):
            if r:
                pct = r["pct_of_floor"] if phase == "decode" else r["pct_of_peak"]
                ax.annotate(f"{r['tok_s']:.1f}\n{pct:.0f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        floor = 0.0
        if phase == "decode":
            floor = m["read_gb_s"] * 1e9 / doc["model"]["bytes_per_token"]
            ax.axhline(floor, color="black", linestyle="--", label=f"floor at {m['read_gb_s']:.0f} GB/s: {floor:.0f} tok/s")
            ax.legend(fontsize=7)
            ax.set_title(f"decode {tokens} tokens (after {doc['settings']['decode_depth']})", fontsize=9)
        else:
            ax.set_title(f"prefill {tokens} tokens (% of GEMM peak)", fontsize=9)
        top = max(values + ([floor] if phase == "decode" else []))
        ax.set_ylim(0, 1.2 * top if top > 0 else 1.0)  # room for the labels above the bars
        ax.set_ylabel("tokens/s")
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"rio-rt bench decode: {doc['model']['description']}, bf16, {m['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
