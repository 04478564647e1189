"""Fuzzing the argument parsers: any numpy view (strides of any sign, broadcasts, size-0 and
size-1 axes, every dtype) reads the same as its contiguous copy, and objects that are not
tensors, or lie about being one, raise TypeError/ValueError, never crash."""
from __future__ import annotations

import numpy as np
import pytest

from rio_rt import ops

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
import ml_dtypes  # noqa: E402

DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16]


@st.composite
def matrix_views(draw, rows, cols):
    """A (rows, cols) view of a larger random array, reached by steps, flips, transposes or broadcasts."""
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["strided", "transposed", "broadcast_rows", "broadcast_cols"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "broadcast_rows":
        return np.broadcast_to(rng.standard_normal((1, cols)).astype(dtype), (rows, cols))
    if kind == "broadcast_cols":
        return np.broadcast_to(rng.standard_normal((rows, 1)).astype(dtype), (rows, cols))
    rs, cs = draw(st.sampled_from([1, 2, 3, -1, -2])), draw(st.sampled_from([1, 2, -1, -3]))
    if kind == "transposed":
        base = rng.standard_normal((cols * abs(cs) + 1, rows * abs(rs) + 1)).astype(dtype)
        return base[:: cs][:cols, :: rs][:, :rows].T
    base = rng.standard_normal((rows * abs(rs) + 1, cols * abs(cs) + 1)).astype(dtype)
    return base[:: rs][:rows, :: cs][:, :cols]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), rows=st.integers(0, 9), k=st.integers(1, 17), n=st.integers(1, 9))
def test_any_view_reads_like_its_contiguous_copy(data, rows, k, n):
    x = data.draw(matrix_views(rows, k))
    w = data.draw(matrix_views(n, k))
    w = w.astype(x.dtype)  # grouped_gemm needs one weight dtype; astype keeps the strides
    got = ops.grouped_gemm(x, [w], [0, rows])
    want = ops.grouped_gemm(np.ascontiguousarray(x), [np.ascontiguousarray(w)], [0, rows])
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


class LyingDlpack:
    """Claims DLPack support but hands back something else."""

    def __init__(self, capsule, device=(1, 0)):
        self.capsule, self.device = capsule, device

    def __dlpack__(self, **_):
        return self.capsule

    def __dlpack_device__(self):
        return self.device


class LyingInterface:
    def __init__(self, interface):
        self.__array_interface__ = interface


NOT_TENSORS = [
    None, 3, 2.5, "x", b"\x00" * 16, [1.0, 2.0], {"a": 1}, object(), np.float32(1.0),
    LyingDlpack("not a capsule"), LyingDlpack(None), LyingDlpack(None, device=(2, 0)), LyingDlpack(None, device="cpu"),
    LyingInterface("nope"), LyingInterface({}), LyingInterface({"shape": (2, 2), "typestr": "<f4", "data": (0, False)}),
    LyingInterface({"shape": (2, 2), "typestr": "<f4", "data": None}),
    LyingInterface({"shape": "2x2", "typestr": "<f4", "data": (1, False)}),
    LyingInterface({"shape": (2, 2), "typestr": "<c8", "data": (64, False)}),
    LyingInterface({"shape": (2, 2), "typestr": "<f4", "data": (64, False), "strides": (4,)}),
]


@pytest.mark.parametrize("bad", NOT_TENSORS, ids=lambda b: type(b).__name__)
@pytest.mark.parametrize("position", ["x", "router_weight"])
def test_non_tensors_raise_type_or_value_errors(bad, position):
    args = {"x": np.zeros((2, 4), np.float32), "router_weight": np.zeros((3, 4), np.float32)}
    args[position] = bad
    with pytest.raises((TypeError, ValueError), match=position):
        ops.moe_router(args["x"], args["router_weight"], 1)


dims = st.integers(0, 5)


@settings(max_examples=300, deadline=None)
@given(
    x_shape=st.lists(dims, min_size=1, max_size=3),
    router_shape=st.lists(dims, min_size=1, max_size=3),
    gate_up_shape=st.lists(dims, min_size=2, max_size=4),
    down_shape=st.lists(dims, min_size=2, max_size=4),
    shared=st.none() | st.tuples(st.lists(dims, min_size=1, max_size=3), st.lists(dims, min_size=1, max_size=3)),
    top_k=st.integers(-1, 6),
    dtypes=st.tuples(*[st.sampled_from([np.float32, np.float16, ml_dtypes.bfloat16, np.int32]) for _ in range(3)]),
)
def test_moe_forward_shape_fuzz_never_panics(x_shape, router_shape, gate_up_shape, down_shape, shared, top_k, dtypes):
    """Arbitrary (mostly inconsistent) shapes and dtypes: a result or a TypeError/ValueError, nothing else."""
    x_dt, w_dt, d_dt = dtypes
    kwargs = {}
    if shared is not None:
        kwargs = {"shared_gate_proj": np.ones(shared[0], w_dt), "shared_up_proj": np.ones(shared[0], w_dt),
                  "shared_down_proj": np.ones(shared[1], w_dt), "shared_expert_gate": np.ones(shared[1][-1:], w_dt)}
    try:
        out = ops.moe_forward(np.ones(x_shape, x_dt), np.ones(router_shape, w_dt), np.ones(gate_up_shape, w_dt),
                              np.ones(down_shape, d_dt), top_k=top_k, **kwargs)
    except (TypeError, ValueError):
        return
    assert out.shape == tuple(x_shape) and np.all(np.isfinite(np.asarray(out, np.float32)))


@settings(max_examples=200, deadline=None)
@given(
    x_shape=st.lists(dims, min_size=1, max_size=3),
    w_shape=st.lists(dims, min_size=1, max_size=4),
    offsets=st.lists(st.integers(-2, 7), min_size=0, max_size=6),
    y_shape=st.lists(dims, min_size=1, max_size=3),
    weights_shape=st.lists(dims, min_size=1, max_size=3),
    position=st.lists(st.integers(-2, 7), min_size=0, max_size=12),
    num_experts=st.integers(-1, 6),
)
def test_gemm_dispatch_combine_fuzz_never_panics(x_shape, w_shape, offsets, y_shape, weights_shape, position, num_experts):
    def attempt(fn, *args):
        try:
            fn(*args)
        except (TypeError, ValueError):
            pass

    attempt(ops.grouped_gemm, np.ones(x_shape, np.float32), np.ones(w_shape, np.float32), offsets)
    attempt(ops.moe_combine, np.ones(y_shape, np.float32), np.ones(weights_shape, np.float32), np.array(position, np.int64))
    attempt(ops.moe_dispatch, np.array(position, np.int32), num_experts)
    attempt(ops.moe_topk_softmax, np.ones(y_shape, np.float16), num_experts)
