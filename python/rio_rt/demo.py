"""``rio-rt demo``: a small Qwen3.5-MoE checkpoint with RANDOM weights, built once and cached,
then loaded, prompted through its chat template and run: a streamed sampled generation and a
SwiReasoning (or Soft Thinking) generation with its trace table.

The checkpoint is a real Hugging Face folder made with numpy only: ``config.json`` (the
multimodal ``qwen3_5_moe`` layout), ``model.safetensors`` (bf16, fused experts, the
``model.language_model.`` prefix, ``A_log`` and the GDN norm in f32 as in the official release),
a byte-level BPE ``tokenizer.json`` trained on a short embedded text by the Rust ``tokenizers``
crate with Qwen's special tokens, ``tokenizer_config.json``, a Qwen3.5-style
``chat_template.jinja`` and ``generation_config.json``. Its weights are seeded random numbers,
so everything runs for real and the text it writes is gibberish.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["CHAT_TEMPLATE", "DEMO_TEXT_CONFIG", "add_parser", "build_demo_checkpoint", "demo_checkpoint",
           "write_safetensors"]

#: Bump when the recipe changes in a way its hash does not see (e.g. the writer's layout).
RECIPE_VERSION = 1
SEED = 20261123

#: 3 Gated DeltaNet layers + 1 gated-attention layer, 32 experts top-4 (35B-A3B's ratios, scaled down).
DEMO_TEXT_CONFIG: Dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    "full_attention_interval": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "linear_num_key_heads": 4,
    "linear_num_value_heads": 8,
    "linear_key_head_dim": 32,
    "linear_value_head_dim": 32,
    "linear_conv_kernel_dim": 4,
    "num_experts": 32,
    "num_experts_per_tok": 4,
    "moe_intermediate_size": 128,
    "shared_expert_intermediate_size": 128,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "attention_bias": False,
    "max_position_embeddings": 4096,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                        "mrope_section": [3, 3, 2], "mrope_interleaved": True},
}

#: Qwen's special tokens, after the learned vocabulary in Qwen's order; ``<think>``/``</think>``
#: are added but not special (decode keeps them), as in Qwen3/Qwen3.5.
ADDED_TOKENS: List[Tuple[str, bool]] = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<think>", False), ("</think>", False),
]
TOKENIZER_VOCAB = 1024
#: The text is short: merge every pair seen at all, so that whole words become tokens.
TOKENIZER_MIN_FREQUENCY = 1

#: A Qwen3.5-style ChatML template: system prompt, tool responses, reasoning kept only for the
#: assistant turns after the last user query, and the thinking switch: the generation prompt opens
#: a ``<think>`` block, or with ``enable_thinking=False`` closes an empty one.
CHAT_TEMPLATE = r"""{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content | trim + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set content = message.content if message.content is string else '' %}
    {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- elif '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index and reasoning_content %}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- '<|im_start|>assistant\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or messages[loop.index0 - 1].role != "tool" %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != "tool" %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- elif not (message.role == "system" and loop.first) %}
        {{- raise_exception('Unexpected message role: ' + message.role) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- else %}
        {{- '<think>\n' }}
    {%- endif %}
{%- endif %}
"""

#: What the tokenizer is trained on: a few paragraphs in the register of chat transcripts.
TRAINING_TEXT = """\
A mixture-of-experts layer holds many small feed-forward networks, the experts, and a router.
For every token the router scores all experts, keeps the best few, and mixes their outputs with
the router's weights. Only the chosen experts run, so a model with hundreds of billions of
parameters reads a few billion of them per token.
The hybrid layers alternate: three Gated DeltaNet layers keep a fixed-size recurrent state, then
one attention layer looks back at every token in its key-value cache.
User: What is the capital of France?
Assistant: <think>
The user asks for the capital of France. That is Paris.
</think>

The capital of France is Paris.
User: How many legs does a spider have?
Assistant: <think>
Spiders are arachnids; arachnids have eight legs.
</think>

A spider has eight legs.
User: Solve 12 * 7 + 5.
Assistant: <think>
12 * 7 = 84, and 84 + 5 = 89.
</think>

The answer is 89.
Reasoning models think before they answer. Latent reasoning lets the model think in continuous
embeddings instead of tokens: when the next token is uncertain, feed the probability-weighted
mix of all token embeddings; when it is confident again, go back to writing words.
SwiReasoning switches between the two modes by watching the entropy of the next-token
distribution; Soft Thinking feeds the top concept tokens and stops thinking when it is sure.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2026 3.14159 1e-6.
Punctuation and symbols: ( ) [ ] { } < > = + - * / % & | ! ? , . ; : ' " # @ $ ^ ~ `
Other scripts and symbols: Ünïcödé, naïve café, 中文字符, 日本語, русский, ελληνικά, emoji 🚀🎉✨.
"""

DEFAULT_PROMPT = "Explain in one sentence what a mixture-of-experts model is."

RANDOM_WARNING = ("The weights are RANDOM (seeded numpy noise, never trained), so the text below is gibberish. "
                  "The demo shows that every stage runs: tokenizer, chat template, hybrid Gated DeltaNet + "
                  "attention layers, MoE routing, sampling, streaming and latent reasoning.")


def _recipe() -> Dict[str, Any]:
    return {"version": RECIPE_VERSION, "seed": SEED, "config": DEMO_TEXT_CONFIG, "added_tokens": ADDED_TOKENS,
            "tokenizer_vocab": TOKENIZER_VOCAB, "min_frequency": TOKENIZER_MIN_FREQUENCY, "template": CHAT_TEMPLATE, "text": TRAINING_TEXT}


def recipe_key() -> str:
    """A short hash of everything that goes into the checkpoint: a new recipe, a new folder."""
    blob = json.dumps(_recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/rio_rt``, else ``~/.cache/rio_rt``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rio_rt"


# ----- writing the checkpoint ---------------------------------------------------------------------

def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns (uint16), rounding to nearest even as torch does."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write_safetensors(path: Path, tensors: Dict[str, Tuple[str, np.ndarray]]) -> None:
    """Writes ``{name: (dtype, array)}`` as a safetensors file; ``dtype`` is ``"BF16"`` (array of
    uint16 bit patterns) or ``"F32"``. F32 tensors come first so every tensor starts aligned to
    its element size; the header is padded to 8 bytes with spaces, as the safetensors library does."""
    sizes = {"BF16": 2, "F32": 4}
    order = sorted(tensors, key=lambda name: (tensors[name][0] != "F32", name))
    header: Dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in order:
        dtype, array = tensors[name]
        if array.itemsize != sizes[dtype]:
            raise ValueError(f"{name}: a {dtype} tensor needs {sizes[dtype]}-byte elements, got {array.dtype}")
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for name in order:
            f.write(np.ascontiguousarray(tensors[name][1]).tobytes())


def _weights(config: Dict[str, Any], vocab: int, rng: np.random.Generator) -> Dict[str, Tuple[str, np.ndarray]]:
    """Random weights for every text tensor (spec section 5 names and shapes). Matrices at half the
    unit-variance scale (N(0, 0.5^2 / fan_in)); embedding, router and conv at unit scale; the lm_head
    at three times unit scale, so that next-token distributions range from flat to peaked
    (SwiReasoning switches on that); norms around their initial value."""
    H = config["hidden_size"]
    nh, nkv, hd = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    nk, nv = config["linear_num_key_heads"], config["linear_num_value_heads"]
    dk, dv, K = config["linear_key_head_dim"], config["linear_value_head_dim"], config["linear_conv_kernel_dim"]
    E, I, Is = config["num_experts"], config["moe_intermediate_size"], config["shared_expert_intermediate_size"]

    def matrix(*shape: int, scale: float = 0.5) -> Tuple[str, np.ndarray]:
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale / np.sqrt(shape[-1]))
        return "BF16", to_bf16_bits(w)

    def norm(n: int, centre: float = 0.0, dtype: str = "BF16") -> Tuple[str, np.ndarray]:
        w = (rng.standard_normal(n, dtype=np.float32) * np.float32(0.2) + np.float32(centre)).astype(np.float32)
        return (dtype, w) if dtype == "F32" else (dtype, to_bf16_bits(w))

    p = "model.language_model."
    t: Dict[str, Tuple[str, np.ndarray]] = {
        p + "embed_tokens.weight": matrix(vocab, H, scale=1.0),
        p + "norm.weight": norm(H),
        "lm_head.weight": matrix(vocab, H, scale=3.0),
    }
    conv_channels = 2 * nk * dk + nv * dv
    for i, kind in enumerate(config["layer_types"]):
        L = f"{p}layers.{i}."
        t[L + "input_layernorm.weight"] = norm(H)
        t[L + "post_attention_layernorm.weight"] = norm(H)
        if kind == "linear_attention":
            a = L + "linear_attn."
            t[a + "in_proj_qkv.weight"] = matrix(conv_channels, H)
            t[a + "in_proj_z.weight"] = matrix(nv * dv, H)
            t[a + "in_proj_b.weight"] = matrix(nv, H)
            t[a + "in_proj_a.weight"] = matrix(nv, H)
            t[a + "conv1d.weight"] = matrix(conv_channels, 1, K, scale=1.0)
            # transformers initialises A uniformly in (0, 16); A_log and the gated norm are F32 in the release.
            t[a + "A_log"] = ("F32", np.log(rng.uniform(1.0, 16.0, nv)).astype(np.float32))
            t[a + "dt_bias"] = ("BF16", to_bf16_bits(np.ones(nv, dtype=np.float32)))
            t[a + "norm.weight"] = norm(dv, centre=1.0, dtype="F32")
            t[a + "out_proj.weight"] = matrix(H, nv * dv)
        else:
            a = L + "self_attn."
            t[a + "q_proj.weight"] = matrix(2 * nh * hd, H)  # query and output gate, per head
            t[a + "k_proj.weight"] = matrix(nkv * hd, H)
            t[a + "v_proj.weight"] = matrix(nkv * hd, H)
            t[a + "o_proj.weight"] = matrix(H, nh * hd)
            t[a + "q_norm.weight"] = norm(hd)
            t[a + "k_norm.weight"] = norm(hd)
        m = L + "mlp."
        t[m + "gate.weight"] = matrix(E, H, scale=1.0)
        t[m + "experts.gate_up_proj"] = matrix(E, 2 * I, H)
        t[m + "experts.down_proj"] = matrix(E, H, I)
        t[m + "shared_expert.gate_proj.weight"] = matrix(Is, H)
        t[m + "shared_expert.up_proj.weight"] = matrix(Is, H)
        t[m + "shared_expert.down_proj.weight"] = matrix(H, Is)
        t[m + "shared_expert_gate.weight"] = matrix(1, H)
    return t


def build_demo_checkpoint(folder: Path, progress: Callable[[str], None] = print) -> None:
    """Writes the demo checkpoint into ``folder`` (which must exist). Deterministic: the same
    recipe gives the same files."""
    from rio_rt.tokenizer import Tokenizer, train_bpe_tokenizer

    folder = Path(folder)
    t0 = time.perf_counter()
    progress("  training a byte-level BPE tokenizer (Rust tokenizers BpeTrainer) on the embedded text ...")
    lines = [line for line in TRAINING_TEXT.splitlines() if line.strip()]
    tokenizer_json = train_bpe_tokenizer(lines, TOKENIZER_VOCAB, min_frequency=TOKENIZER_MIN_FREQUENCY,
                                         added_tokens=ADDED_TOKENS)
    (folder / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    tokenizer_config = {
        "tokenizer_class": "Qwen2Tokenizer", "model_max_length": DEMO_TEXT_CONFIG["max_position_embeddings"],
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
        "clean_up_tokenization_spaces": False, "split_special_tokens": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    tokenizer = Tokenizer.from_pretrained(folder)
    vocab = len(tokenizer)
    endoftext, im_end = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")
    progress(f"  tokenizer: {vocab} tokens ({vocab - len(ADDED_TOKENS)} learned + {len(ADDED_TOKENS)} added)")

    text_config = {"model_type": "qwen3_5_moe_text", "vocab_size": vocab, **DEMO_TEXT_CONFIG,
                   "eos_token_id": endoftext, "pad_token_id": endoftext, "dtype": "bfloat16"}
    config = {"architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
              "tie_word_embeddings": False, "text_config": text_config, "dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    generation_config = {"eos_token_id": [im_end, endoftext], "pad_token_id": endoftext, "do_sample": True,
                         "temperature": 0.8, "top_k": 20, "top_p": 0.95}
    (folder / "generation_config.json").write_text(json.dumps(generation_config, indent=2), encoding="utf-8")

    progress("  drawing random bf16 weights (seeded numpy) ...")
    weights = _weights(DEMO_TEXT_CONFIG, vocab, np.random.default_rng(SEED))
    n_params = sum(a.size for _, a in weights.values())
    write_safetensors(folder / "model.safetensors", weights)
    size_mb = (folder / "model.safetensors").stat().st_size / 1e6
    progress(f"  model.safetensors: {len(weights)} tensors, {n_params / 1e6:.1f} M parameters, {size_mb:.1f} MB "
             f"({time.perf_counter() - t0:.1f} s)")


def demo_checkpoint(cache_dir: Optional[os.PathLike] = None, progress: Callable[[str], None] = print) -> Tuple[Path, bool]:
    """The demo checkpoint's folder, built on first use: ``(folder, built_now)``. It is built in a
    temporary folder next to its final place and renamed into place when complete, so an
    interrupted build leaves nothing half-written behind that name."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    folder = root / f"demo-qwen35moe-{recipe_key()}"
    if (folder / "model.safetensors").is_file():
        return folder, False
    root.mkdir(parents=True, exist_ok=True)
    progress(f"Building the demo checkpoint (once) in {folder}")
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(building, 0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        build_demo_checkpoint(building, progress)
        try:
            os.rename(building, folder)
        except OSError:
            if not (folder / "model.safetensors").is_file():  # not a concurrent build finishing first
                raise
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return folder, True


# ----- the command ------------------------------------------------------------------------------

def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build (once) a small random Qwen3.5-MoE checkpoint and generate with it",
                       description="Builds once (cached) a small Qwen3.5-MoE checkpoint with RANDOM weights and a "
                                   "trained byte-level BPE tokenizer, then streams a generation and runs latent "
                                   "reasoning with its trace table. The text is gibberish: the weights are random.")
    p.add_argument("--cache-dir", default=None,
                   help="where the checkpoint is kept (default: $XDG_CACHE_HOME/rio_rt or ~/.cache/rio_rt)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message")
    p.add_argument("--max-new-tokens", type=int, default=48, help="tokens per generation (default 48)")
    p.add_argument("--reasoning", choices=("swi", "soft", "none"), default="swi",
                   help="latent reasoning run after the plain one (default swi = SwiReasoning)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import rio_rt

    if args.max_new_tokens < 1:
        raise SystemExit("rio-rt demo: --max-new-tokens must be at least 1")
    out = sys.stdout
    print("rio_rt demo: a small Qwen3.5-MoE checkpoint.", file=out)
    print(f"NOTE: {RANDOM_WARNING}\n", file=out)
    folder, built = demo_checkpoint(args.cache_dir, progress=lambda line: print(line, file=out, flush=True))
    if not built:
        print(f"Using the cached demo checkpoint in {folder}", file=out)
    t0 = time.perf_counter()
    model = rio_rt.Model.from_pretrained(folder)
    tokenizer = model.tokenizer
    assert tokenizer is not None, "the demo checkpoint ships a tokenizer"
    c = DEMO_TEXT_CONFIG
    print(f"Loaded in {time.perf_counter() - t0:.2f} s: {model.model_type}, {model.num_layers} layers "
          f"({', '.join(c['layer_types'])}), {c['num_experts']} experts top-{c['num_experts_per_tok']}, "
          f"hidden {model.hidden_size}, vocab {model.vocab_size}.\n", file=out)

    messages = [{"role": "user", "content": args.prompt}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=True)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    print(f"Chat template (thinking on) gives {len(ids)} prompt tokens:", file=out)
    print("  " + prompt.replace("\n", "\n  ").rstrip(" "), file=out)

    print(f"1) Sampled generation (temperature 0.8, top-p 0.95, seed {args.seed}), streamed:", file=out)
    print("-" * 72, file=out)
    t1 = time.perf_counter()
    n = 0
    finish = None
    for event in model.stream(ids, max_new_tokens=args.max_new_tokens, temperature=0.8, top_p=0.95, top_k=0,
                              seed=args.seed):
        out.write(event.text or "")
        out.flush()
        n += 1
        finish = event.finish_reason or finish
    dt = time.perf_counter() - t1
    print("\n" + "-" * 72, file=out)
    print(f"{n} tokens in {dt:.2f} s ({n / dt:.1f} tokens/s incl. prefill), finish reason: {finish}\n", file=out)

    if args.reasoning == "none":
        return 0
    if args.reasoning == "swi":
        # A short window so that switches happen within a few dozen tokens.
        reasoning: Any = rio_rt.SwiReasoning(window=4, max_switch_count=4)
        name = "SwiReasoning(window=4, max_switch_count=4)"
    else:
        reasoning = rio_rt.SoftThinking(cold_stop_steps=16)
        name = "SoftThinking(cold_stop_steps=16)"
    print(f"2) {name}, greedy, EOS ignored so that the run is long enough to switch; its trace "
          "(latent steps feed soft embeddings, not tokens):", file=out)
    t2 = time.perf_counter()
    result = model.generate(ids, max_new_tokens=args.max_new_tokens, temperature=0.0, ignore_eos=True,
                            reasoning=reasoning, trace=True)
    dt = time.perf_counter() - t2
    print(result.trace.format_table(decode=tokenizer.decode), file=out)
    switches = result.trace.switch_steps()
    print(f"{len(result.token_ids)} steps in {dt:.2f} s, {len(switches)} switches at steps {switches}, "
          f"finish reason: {result.finish_reason}", file=out)
    print(f"Recorded text: {result.text!r}", file=out)
    print("\n(Random weights: the words mean nothing. Run `rio-rt generate --model DIR` on a real checkpoint.)", file=out)
    return 0
