"""Tensor operations of the MoE layer, on numpy arrays and CPU torch tensors."""
from __future__ import annotations
