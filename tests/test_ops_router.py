"""rio_rt.ops.moe_router, moe_topk_softmax and moe_dispatch against the float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import reference_moe as ref
from reference_moe import FLOAT_DTYPES, TIE, assert_close, make
from rio_rt import ops

# (T, E, k): one token, k = E, k = 1, many tokens over few experts, more experts than tokens.
ROUTER_SHAPES = [(1, 4, 1), (1, 6, 6), (7, 8, 2), (33, 16, 4), (5, 64, 8), (64, 4, 3)]


def sorted_by_expert(weights, experts):
    """Rows reordered by expert id, so near-tied slots compare in a fixed order."""
    w, e = ref.as64(weights), np.asarray(experts)
    idx = np.argsort(e, axis=-1)
    return np.take_along_axis(w, idx, -1), np.take_along_axis(e, idx, -1)


def check_routing(weights, experts, probs, top_k, renormalize, dtype):
    t = probs.shape[0]
    assert weights.dtype == np.float32 and experts.dtype == np.int32
    assert weights.shape == (t, top_k) and experts.shape == (t, top_k)
    w = np.asarray(weights)
    assert np.all(np.diff(w, axis=-1) <= 0), "slots must be ordered by decreasing weight"
    ref_w, ref_e = ref.topk_weights(probs, top_k, renormalize, hint=np.asarray(experts), tol=TIE[dtype])
    got_w, got_e = sorted_by_expert(weights, experts)
    want_w, want_e = sorted_by_expert(ref_w, ref_e)
    np.testing.assert_array_equal(got_e, want_e)
    assert_close(got_w, want_w, dtype, "weights")


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", ROUTER_SHAPES)
def test_router_matches_reference(isa, rng, shape, dtype, renormalize):
    t, e, k = shape
    h = 24
    x = make(rng.standard_normal((t, h)), dtype)
    w = make(rng.standard_normal((e, h)) / np.sqrt(h), dtype)
    weights, experts = ops.moe_router(x, w, k, renormalize)
    probs = ref.softmax(ref.as64(x) @ ref.as64(w).T)
    check_routing(weights, experts, probs, k, renormalize, dtype)
    if renormalize:
        np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", ROUTER_SHAPES)
def test_topk_softmax_matches_reference(rng, shape, dtype):
    t, e, k = shape
    logits = make(rng.standard_normal((t, e)) * 2, dtype)
    for renormalize in (True, False):
        weights, experts = ops.moe_topk_softmax(logits, k, renormalize)
        check_routing(weights, experts, ref.softmax(ref.as64(logits)), k, renormalize, dtype)


def test_topk_softmax_ties_go_to_the_lower_index():
    weights, experts = ops.moe_topk_softmax(np.zeros((3, 6), np.float32), 4)
    np.testing.assert_array_equal(experts, np.tile(np.arange(4, dtype=np.int32), (3, 1)))
    np.testing.assert_allclose(weights, 0.25, rtol=1e-6)


def test_router_on_transposed_and_strided_inputs(rng):
    h, e = 16, 8
    x = rng.standard_normal((h, 12)).astype(np.float32).T  # (12, H), column-major
    w = rng.standard_normal((e, 2 * h)).astype(np.float32)[:, ::2]  # inner stride 2
    weights, experts = ops.moe_router(x, w, 3)
    want_w, want_e = ops.moe_router(np.ascontiguousarray(x), np.ascontiguousarray(w), 3)
    np.testing.assert_array_equal(experts, want_e)
    np.testing.assert_array_equal(weights, want_w)
    check_routing(weights, experts, ref.softmax(ref.as64(x) @ ref.as64(w).T), 3, True, "float32")


def test_router_with_no_tokens_is_empty():
    weights, experts = ops.moe_router(np.zeros((0, 8), np.float32), np.ones((4, 8), np.float32), 2)
    assert weights.shape == (0, 2) and experts.shape == (0, 2)


def check_dispatch(experts, num_experts):
    counts, offsets, order, position = ops.moe_dispatch(experts, num_experts)
    want = ref.dispatch(np.asarray(experts), num_experts)
    for got, exp, name in zip((counts, offsets, order, position), want, ("counts", "offsets", "order", "position")):
        assert got.dtype == np.int32, name
        np.testing.assert_array_equal(np.asarray(got).reshape(-1), exp, err_msg=name)
    assert position.shape == np.asarray(experts).shape


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize(
    "t,e,k",
    [(1, 4, 1), (1, 5, 5), (9, 8, 2), (50, 16, 4), (3, 64, 8), (200, 3, 2)],
)
def test_dispatch_matches_reference(rng, t, e, k, index_dtype):
    experts = np.stack([rng.permutation(e)[:k] for _ in range(t)]).astype(index_dtype)
    check_dispatch(experts, e)


def test_dispatch_edge_cases():
    check_dispatch(np.zeros((10, 1), np.int32), 4)  # every token to one expert, the rest idle
    check_dispatch(np.array([[3, 0]], np.int32), 8)  # one token: six experts with no rows
    check_dispatch(np.array([2, 2, 0, 2], np.int64), 3)  # flat (T*k,) ids
    counts, offsets, order, position = ops.moe_dispatch(np.zeros((0, 2), np.int32), 5)
    np.testing.assert_array_equal(counts, np.zeros(5))
    np.testing.assert_array_equal(offsets, np.zeros(6))
    assert order.shape == (0,) and position.shape == (0, 2)
