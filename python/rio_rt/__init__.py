"""rio_rt: Mixture-of-Experts inference with latent reasoning, on a Rust core.

The native module ``rio_rt._rio_rt`` does the work; this package gives it a typed Python face.
"""
from __future__ import annotations

from rio_rt._rio_rt import (
    CheckpointError,
    ConfigError,
    RioError,
    __version__,
    cpu_features,
    num_threads,
    set_max_isa,
    set_num_threads,
)
from rio_rt import cuda, ops, provenance
from rio_rt.cuda import cuda_is_available
from rio_rt.model import Model, ModelCache
from rio_rt.tokenizer import Tokenizer
from rio_rt import reasoning
from rio_rt.reasoning import SoftThinking, SwiReasoning, Trace, plot_trace
from rio_rt.generation import GenerationEvent, GenerationResult, SamplingParams

__all__ = [
    "CheckpointError",
    "ConfigError",
    "GenerationEvent",
    "GenerationResult",
    "Model",
    "ModelCache",
    "RioError",
    "SoftThinking",
    "SwiReasoning",
    "Trace",
    "SamplingParams",
    "Tokenizer",
    "__version__",
    "cpu_features",
    "cuda",
    "cuda_is_available",
    "num_threads",
    "ops",
    "plot_trace",
    "provenance",
    "reasoning",
    "set_max_isa",
    "set_num_threads",
]
