"""rio_rt.ops.grouped_gemm and moe_combine against the float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import reference_moe as ref
from reference_moe import FLOAT_DTYPES, assert_close, make
from rio_rt import ops

# Rows per expert: idle experts, a one-row expert, everything on one expert, a single expert.
GROUPS = [[3, 0, 1, 5], [0, 0, 7, 0], [1], [2, 9, 0, 4, 1, 0, 6, 3]]


@pytest.mark.parametrize("layout", ["stacked", "list"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("groups", GROUPS)
def test_grouped_gemm_matches_reference(isa, rng, groups, dtype, layout):
    e, n, k = len(groups), 24, 40
    offsets = np.concatenate([[0], np.cumsum(groups)]).astype(np.int32)
    x = make(rng.standard_normal((int(offsets[-1]), k)), dtype)
    w = make(rng.standard_normal((e, n, k)) / np.sqrt(k), dtype)
    weights = w if layout == "stacked" else [w[i] for i in range(e)]
    out = ops.grouped_gemm(x, weights, offsets)
    assert out.dtype == x.dtype and out.shape == (x.shape[0], n)
    assert_close(out, ref.grouped_gemm(x, w, offsets), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_grouped_gemm_on_non_contiguous_inputs(rng, dtype):
    groups = [4, 0, 3]
    offsets = list(np.concatenate([[0], np.cumsum(groups)]))  # a plain list of ints works too
    e, n, k = 3, 8, 16
    x = make(rng.standard_normal((k, 7)), dtype).T  # transposed view: copied for the kernels
    w_big = make(rng.standard_normal((e, 2 * n, k + 5)), dtype)
    w = w_big[:, ::2, 2:k + 2]  # strided rows: read in place
    out = ops.grouped_gemm(x, w, offsets)
    assert_close(out, ref.grouped_gemm(x, w, offsets), dtype)
    wt = make(rng.standard_normal((e, k, n)), dtype).transpose(0, 2, 1)  # column-major experts
    assert_close(ops.grouped_gemm(x, wt, offsets), ref.grouped_gemm(x, wt, offsets), dtype)


def test_grouped_gemm_writes_into_out(rng):
    x = rng.standard_normal((5, 8)).astype(np.float32)
    w = rng.standard_normal((2, 3, 8)).astype(np.float32)
    out = np.full((5, 3), np.nan, np.float32)
    result = ops.grouped_gemm(x, w, [0, 2, 5], out=out)
    assert result is out
    assert_close(out, ref.grouped_gemm(x, w, [0, 2, 5]), "float32")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("t,e,k", [(1, 4, 1), (6, 4, 4), (17, 8, 2), (40, 16, 3)])
def test_combine_matches_reference(isa, rng, t, e, k, dtype):
    h = 20
    experts = np.stack([rng.permutation(e)[:k] for _ in range(t)]).astype(np.int32)
    _, _, _, position = ops.moe_dispatch(experts, e)
    expert_out = make(rng.standard_normal((t * k, h)), dtype)
    weights = rng.random((t, k)).astype(np.float32)
    want = ref.combine(expert_out, weights, position)
    out = ops.moe_combine(expert_out, weights, position)
    assert out.dtype == expert_out.dtype
    assert_close(out, want, dtype)
    assert_close(ops.moe_combine(expert_out, weights, np.asarray(position).reshape(-1)), want, dtype, "flat position")


def test_dispatch_gemm_combine_equal_dense_per_token_experts(rng):
    """The three ops chained reproduce Σ_j w_tj · x_t W_{e_tj}ᵀ computed token by token."""
    t, e, k, h, n = 11, 6, 2, 16, 12
    x = rng.standard_normal((t, h)).astype(np.float32)
    w = rng.standard_normal((e, n, h)).astype(np.float32)
    weights, experts = ops.moe_topk_softmax(rng.standard_normal((t, e)).astype(np.float32), k)
    counts, offsets, order, position = ops.moe_dispatch(experts, e)
    xs = x[np.asarray(order) // k]
    ys = ops.grouped_gemm(xs, w, offsets)
    out = ops.moe_combine(ys, weights, position)
    want = np.stack([sum(weights[i, j] * (x[i].astype(np.float64) @ w[experts[i, j]].T) for j in range(k)) for i in range(t)])
    assert_close(out, want, "float32")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_grouped_gemm_prefill_sized(isa, rng, dtype):
    """Blocks long and wide enough for the cache-blocked kernels, with ragged edges."""
    groups = [0, 70, 1, 129, 33]
    offsets = np.concatenate([[0], np.cumsum(groups)])
    x = make(rng.standard_normal((int(offsets[-1]), 160)), dtype)
    w = make(rng.standard_normal((len(groups), 100, 160)) / 12, dtype)
    assert_close(ops.grouped_gemm(x, w, offsets), ref.grouped_gemm(x, w, offsets), dtype)
