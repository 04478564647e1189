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
    """A Qwen3.5-MoE text model with f32 weights (bf16/f16 checkpoints upcast at load)."""
    @staticmethod
    def load(path: str) -> "Model": ...
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
