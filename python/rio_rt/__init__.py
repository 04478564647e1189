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
from rio_rt import ops, provenance
from rio_rt.model import Model, ModelCache

__all__ = [
    "CheckpointError",
    "ConfigError",
    "Model",
    "ModelCache",
    "RioError",
    "__version__",
    "cpu_features",
    "num_threads",
    "ops",
    "provenance",
    "set_max_isa",
    "set_num_threads",
]
