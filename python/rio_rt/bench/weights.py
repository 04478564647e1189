"""Random MoE weights and inputs, built in numpy and shared (never copied) with rio and torch.

bfloat16 has no numpy dtype, so bf16 arrays hold the bits as uint16; `to_float32` decodes them.
Values are drawn straight as bit patterns (random sign and mantissa, exponent in a two-octave
band), which is ~20x faster than rounding normal samples and still gives every element a
nonzero value, at the requested RMS within a factor √2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# dtype -> (numpy container, unsigned bit container, mantissa bits, exponent bias)
_FORMATS = {
    "bf16": (np.uint16, np.uint16, 7, 127),
    "f16": (np.float16, np.uint16, 10, 15),
    "f32": (np.float32, np.uint32, 23, 127),
}
_CHUNK = 1 << 24  # elements drawn at a time, to bound temporary memory


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, rms: float) -> np.ndarray:
    """An array of `shape` whose values are ±[2^b, 2^(b+2)) with random mantissas; b is picked so
    the RMS lands within a factor √2 of `rms` (a power-of-two grid)."""
    container, bits_type, mantissa, bias = _FORMATS[dtype]
    nbits = np.dtype(bits_type).itemsize * 8
    # RMS of |m|·2^b with m spread over [1, 4) as drawn here is about 2.4·2^b.
    exponent = int(np.round(np.log2(rms / 2.4))) + bias
    if not 1 <= exponent < (1 << (nbits - 1 - mantissa)) - 2:
        raise ValueError(f"rms: {rms} is outside the range of {dtype}")
    keep = (1 << (nbits - 1)) | ((1 << (mantissa + 1)) - 1)  # sign, mantissa, lowest exponent bit
    out = np.empty(shape, dtype=bits_type)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        part[:] = rng.integers(0, 1 << nbits, size=part.size, dtype=bits_type)
        part &= bits_type(keep)
        part += bits_type(exponent << mantissa)
    return out.view(container)


def to_float32(a: np.ndarray, dtype: str) -> np.ndarray:
    """The values of an array from `random_array` (or any array of `dtype`) as float32."""
    if dtype == "bf16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


@dataclass
class LayerWeights:
    """One MoE block in the fused checkpoint layout; `shared_*` are None without a shared expert."""

    dtype: str
    router: np.ndarray  # [E, H]
    gate_up: np.ndarray  # [E, 2I, H], gate rows first
    down: np.ndarray  # [E, H, I]
    shared_gate: np.ndarray | None = None  # [I_s, H]
    shared_up: np.ndarray | None = None  # [I_s, H]
    shared_down: np.ndarray | None = None  # [H, I_s]
    shared_expert_gate: np.ndarray | None = None  # [1, H]

    @property
    def has_shared(self) -> bool:
        return self.shared_gate is not None


def build_layer(shape, dtype: str, seed: int = 0) -> LayerWeights:
    """Random weights for `shape` (a `MoeShape`) scaled so activations stay O(1) through the block."""
    rng = np.random.default_rng(seed)
    e, h, i, s = shape.experts, shape.hidden, shape.intermediate, shape.shared_intermediate
    w = LayerWeights(
        dtype=dtype,
        router=random_array(rng, (e, h), dtype, h**-0.5),
        gate_up=random_array(rng, (e, 2 * i, h), dtype, h**-0.5),
        down=random_array(rng, (e, h, i), dtype, i**-0.5),
    )
    if s:
        w.shared_gate = random_array(rng, (s, h), dtype, h**-0.5)
        w.shared_up = random_array(rng, (s, h), dtype, h**-0.5)
        w.shared_down = random_array(rng, (h, s), dtype, s**-0.5)
        w.shared_expert_gate = random_array(rng, (1, h), dtype, h**-0.5)
    return w


def random_inputs(rng: np.random.Generator, count: int, tokens: int, hidden: int, dtype: str) -> np.ndarray:
    """`count` fresh activation batches `[count, tokens, hidden]` of RMS about 1."""
    return random_array(rng, (count, tokens, hidden), dtype, 1.0)
