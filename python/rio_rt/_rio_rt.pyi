"""Typed stubs of the native module ``rio_rt._rio_rt`` (rust/rio-py).

Tensor arguments are numpy arrays (float32, float16, ``ml_dtypes.bfloat16``; int32/int64 for
indices) or CPU torch tensors; results have the kind of the main input.
"""
from typing import Any, Sequence, Tuple, TypedDict, Union

Array = Any

# ---- errors (errors.rs) ----------------------------------------------------------------------

class RioError(Exception):
    """Base class of every error rio_rt raises itself."""

class CheckpointError(RioError):
    """A checkpoint file is missing, truncated or inconsistent."""

class ConfigError(RioError):
    """A config file is unreadable or holds unsupported values."""

# ---- system (system.rs) ----------------------------------------------------------------------

__version__: str

class CpuFeatures(TypedDict):
    features: list[str]
    best_isa: str
    active_isa: str
    available_isas: list[str]

def cpu_features() -> CpuFeatures:
    """SIMD features of this CPU, the best and active kernel level, and every level it can run."""

def set_max_isa(name: str) -> str:
    """Caps the kernels at ``name`` (scalar, avx2, avx512, avx512_bf16, amx_bf16); returns the active level."""

def set_num_threads(threads: int) -> None:
    """Sets the worker threads (0: one per core)."""

def num_threads() -> int: ...

# ---- ops (ops.rs, dlpack.rs) -----------------------------------------------------------------

class NativeTensor:
    """A Rust-owned buffer that numpy and torch adopt through DLPack without a copy."""

    @property
    def shape(self) -> list[int]: ...
    @property
    def dtype(self) -> str: ...
    def data_ptr(self) -> int: ...
    def __dlpack__(
        self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None, copy: bool | None = None
    ) -> Any: ...
    def __dlpack_device__(self) -> Tuple[int, int]: ...

def moe_router(x: Array, router_weight: Array, top_k: int, renormalize: bool = True) -> Tuple[Array, Array]: ...
def moe_topk_softmax(logits: Array, top_k: int, renormalize: bool = True) -> Tuple[Array, Array]: ...
def moe_dispatch(experts: Array, num_experts: int) -> Tuple[Array, Array, Array, Array]: ...
def grouped_gemm(
    x: Array, weights: Union[Array, Sequence[Array]], offsets: Union[Array, Sequence[int]], *, out: Array | None = None
) -> Array: ...
def moe_combine(expert_out: Array, weights: Array, position: Array, *, out: Array | None = None) -> Array: ...
def moe_forward(
    x: Array,
    router_weight: Array,
    gate_up_proj: Array | None = None,
    down_proj: Array | Sequence[Array] | None = None,
    *,
    top_k: int,
    renormalize: bool = True,
    gate_proj: Sequence[Array] | None = None,
    up_proj: Sequence[Array] | None = None,
    shared_gate_proj: Array | None = None,
    shared_up_proj: Array | None = None,
    shared_down_proj: Array | None = None,
    shared_expert_gate: Array | None = None,
    out: Array | None = None,
) -> Array: ...

# ---- bench (bench.rs; the bench engineer appends here) ---------------------------------------

def measure_read_bandwidth(bytes: int, seconds: float) -> float:
    """Streaming read bandwidth in GB/s over a `bytes` buffer on the worker pool; best pass in ~`seconds`."""

def measure_gemm_peak(m: int, n: int, k: int, seconds: float) -> float:
    """bf16 GFLOP/s of rio's GEMM on [m, k] x [n, k]^T, n split over the pool; best run in ~`seconds`."""

class CacheFlusher:
    """A resident buffer of `bytes`; `flush()` reads it through, evicting what the caches held."""

    def __init__(self, bytes: int) -> None: ...
    def flush(self) -> None: ...
    @property
    def bytes(self) -> int: ...

class MoeLayerBench:
    """One MoE layer over the caller's numpy arrays (bf16 as uint16 bits), timed in Rust."""

    def __init__(
        self,
        router_weight: Array,
        gate_up_proj: Array,
        down_proj: Array,
        top_k: int,
        dtype: str,
        shared_gate_proj: Array | None = None,
        shared_up_proj: Array | None = None,
        shared_down_proj: Array | None = None,
        shared_expert_gate: Array | None = None,
    ) -> None: ...
    def forward(self, x: Array, out: Array) -> None: ...
    def time_forward(
        self, xs: Array, out: Array, seconds: float, min_runs: int, flusher: CacheFlusher | None = None
    ) -> list[float]: ...

# ---- provenance (provenance.rs; the provenance engineer appends here) ------------------------

from collections.abc import Callable

def provenance_fit(
    candidate: str,
    parents: list[str],
    *,
    quick: bool = False,
    sample: int = 65536,
    seed: int = 0,
    intercept: bool = False,
    thresholds: dict[str, float] | None = None,
    progress: Callable[[int, int, str, int, int], object] | None = None,
) -> str:
    """Fits `candidate` as a blend of `parents`; the report as JSON (see rio_rt.provenance).
    `progress(done, total, name, bytes_done, bytes_total)` runs before each tensor; an exception
    it raises stops the fit and propagates."""

# ---- models (model.rs) -------------------------------------------------------------------------

class ModelCache:
    """The decoding state of one sequence (KV caches, Gated DeltaNet conv and f32 states)."""
    @property
    def position(self) -> int: ...

class Model:
    """A Qwen3.5-MoE or Qwen3-MoE text model, weights read in place from the mapped checkpoint."""
    @staticmethod
    def load(path: str, dtype: str = "auto") -> "Model": ...
    @property
    def dtype(self) -> str:
        """``"bfloat16"`` or ``"float32"``: the dtype the forward computes in."""
    def rope(self) -> tuple[list[float], float]:
        """``(inv_freq, attention_scaling)`` of the attention layers' RoPE (YaRN included)."""
    def forward_batch(self, ids: list[Array], caches: list[ModelCache]) -> Array:
        """``ids[b]`` (1-D) continues ``caches[b]``; float32 logits ``(B, V)`` of each last new position."""
    @property
    def vocab_size(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def eos_token_ids(self) -> list[int]: ...
    def new_cache(self) -> ModelCache: ...
    def forward(self, ids: Array | None = None, *, input_embeds: Array | None = None, cache: ModelCache | None = None,
                logits_to_keep: int = 0) -> Array:
        """Logits `(T, V)` / `(B, T, V)` float32 of ids `(T,)` / `(B, T)` or input_embeds `(T, H)` / `(B, T, H)`."""

# ---- generation (generate.rs) ----------------------------------------------------------------

class _NativeResult(TypedDict):
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[list[Tuple[int, float]]]
    finish_reason: str
    text: str | None
    trace: dict[str, list[Any]] | None

class _GenerationDefaults(TypedDict):
    do_sample: bool | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    min_p: float | None
    repetition_penalty: float | None

def generate(
    model: Model,
    prompts: Sequence[Sequence[int]],
    params: Sequence[dict[str, Any]],
    *,
    decode: Any = None,
    reasoning: Any = None,
    trace: bool = False,
    observer: Any = None,
) -> list[_NativeResult]:
    """The Rust decode loop over a batch (GIL released except inside ``decode``/``observer``).
    ``decode``: a native ``Tokenizer`` (decoded in Rust, special tokens skipped) or a callable
    ``decode(ids) -> str``. ``params[i]`` holds every ``rio_rt.SamplingParams`` field; ``observer(events)`` gets per step
    a list of ``(request, step, token_id, logprob, text_delta, finish_reason, mode, trace_row)``
    and may return ``[(request, "stop" | "switch"), ...]``."""

def generation_defaults(model: Model) -> _GenerationDefaults:
    """The sampling values in the checkpoint's generation_config.json (None where absent)."""

# --- CUDA backend (rust/rio-py/src/cuda.rs; wrapped by rio_rt.cuda) ---

def cuda_status() -> dict[str, Any]:
    """``{"available", "reason", "nvcc", "kernel_modules", "driver_version", "devices", "cublas"}``;
    never raises where there is no GPU."""

def cuda_kernel_images() -> dict[str, dict[str, bytes]]:
    """``{module: {"ptx_80", "ptx_90", "cubin_80", "cubin_90"}}`` embedded at build time."""

def cuda_moe_route(x: Any, router_weight: Any, top_k: int, renormalize: bool, stream: int) -> tuple[list[int], list[float]]:
    """Router on CUDA tensors: flat ``(experts, weights)``, ``top_k`` per token."""

def cuda_moe_dispatch(experts: Sequence[int], top_k: int, num_experts: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """Dispatch on the GPU: ``(counts, offsets, order, position)``."""

def cuda_grouped_gemm(x: Any, weights: Any, offsets: Sequence[int], out: Any, stream: int) -> None:
    """``out[rows of e] = x[rows of e] · weights[e]ᵀ`` on CUDA tensors."""

def cuda_moe_forward(
    x: Any,
    router_weight: Any,
    gate_up_proj: Any,
    down_proj: Any,
    top_k: int,
    renormalize: bool,
    out: Any,
    stream: int,
    shared_gate_proj: Any = None,
    shared_up_proj: Any = None,
    shared_down_proj: Any = None,
    shared_expert_gate: Any = None,
) -> None:
    """The sparse MoE block on CUDA tensors (fused layout), written into ``out``."""

# ---- tokenizer and chat template (tokenizer.rs), checkpoint info (info.rs) ----------------------

class IncrementalDecoder:
    """Streams a growing id sequence's text as deltas that never split a character."""
    def push(self, id: int) -> str:
        """The text ``id`` completes ("" while a character is unfinished)."""
    def finish(self) -> str:
        """The text held back at the end; call once after the last push."""

class Tokenizer:
    """A checkpoint's tokenizer.json (HF tokenizers), special tokens and chat template (minijinja)."""
    @staticmethod
    def from_dir(path: str) -> Tokenizer | None: ...
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...
    def decoder(self, skip_special_tokens: bool = False) -> IncrementalDecoder: ...
    def token_to_id(self, token: str) -> int | None: ...
    def id_to_token(self, id: int) -> str | None: ...
    def is_special(self, id: int) -> bool: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def bos_token(self) -> str | None: ...
    @property
    def eos_token(self) -> str | None: ...
    @property
    def pad_token(self) -> str | None: ...
    @property
    def unk_token(self) -> str | None: ...
    @property
    def bos_token_id(self) -> int | None: ...
    @property
    def eos_token_id(self) -> int | None: ...
    @property
    def pad_token_id(self) -> int | None: ...
    @property
    def unk_token_id(self) -> int | None: ...
    @property
    def think_token_id(self) -> int | None: ...
    @property
    def end_think_token_id(self) -> int | None: ...
    @property
    def chat_template(self) -> str | None: ...
    def apply_chat_template(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False,
                            enable_thinking: bool | None = None, **kwargs: Any) -> str: ...
    def __len__(self) -> int: ...

def train_bpe_tokenizer(texts: list[str], vocab_size: int, min_frequency: int = 2,
                        added_tokens: list[tuple[str, bool]] = ...) -> str:
    """Trains a Qwen-style byte-level BPE tokenizer; returns its tokenizer.json text."""

def checkpoint_info(path: str) -> dict[str, Any]:
    """Config and safetensors-header summary of a checkpoint folder (see rio_rt.info.CheckpointInfo)."""

def cuda_launch(name: str, grid: tuple[int, int, int], block: int, shared_bytes: int, stream: int, args: Sequence[tuple[str, Any]]) -> None:
    """Launches an embedded kernel; ``args`` are ``(kind, value)`` with kind ptr, i32, i64 or f32."""

def cuda_dense_gemm(x: Any, weight: Any, out: Any, stream: int) -> None:
    """``out = x · weightᵀ`` through cuBLAS on CUDA tensors."""

# --- latent reasoning (rust/rio-py/src/reasoning.rs) ---
def latent_step_cost(model: Model, logits: Any, form: str, repeats: int = 20, top_k: int = 10) -> float:
    """Mean seconds of one latent step's extra work on ``model``'s embedding table for a float32
    logit row ``(V,)``: softmax with entropy, then the soft embedding in ``form`` ("full",
    "pruned" or "topk" with K = ``top_k``). For ``rio-rt bench latent``."""
