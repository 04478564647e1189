"""rio_rt.ops.moe_forward (the whole sparse block) against the float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import reference_moe as ref
from reference_moe import FLOAT_DTYPES, TIE, assert_close, make
from rio_rt import ops


def random_block(rng, e, h, i, i_s, dtype, kind="numpy"):
    """Router, fused expert weights and shared expert, scaled so activations stay O(1)."""
    def w(*shape, fan_in):
        return make(rng.standard_normal(shape) / np.sqrt(fan_in), dtype, kind)

    return {
        "router_weight": w(e, h, fan_in=h / 4),  # sharper routing than 1/sqrt(H): fewer near ties
        "gate_up_proj": w(e, 2 * i, h, fan_in=h),
        "down_proj": w(e, h, i, fan_in=i),
        "shared_gate_proj": w(i_s, h, fan_in=h),
        "shared_up_proj": w(i_s, h, fan_in=h),
        "shared_down_proj": w(h, i_s, fan_in=i_s),
        "shared_expert_gate": w(1, h, fan_in=h),
    }


def run_both(x, block, top_k, renormalize=True, layout="fused", shared="gated", dtype="float32"):
    """(rio_rt result, reference result) for one configuration."""
    gu, down = block["gate_up_proj"], block["down_proj"]
    e, two_i = gu.shape[0], gu.shape[1]
    i = two_i // 2
    gates = [gu[x_][:i] for x_ in range(e)]
    ups = [gu[x_][i:] for x_ in range(e)]
    downs = [down[x_] for x_ in range(e)]
    kwargs = {"top_k": top_k, "renormalize": renormalize}
    if shared != "none":
        kwargs.update({k: block[k] for k in ("shared_gate_proj", "shared_up_proj", "shared_down_proj")})
    if shared == "gated":
        kwargs["shared_expert_gate"] = block["shared_expert_gate"]
    if layout == "fused":
        got = ops.moe_forward(x, block["router_weight"], gu, down, **kwargs)
    else:
        got = ops.moe_forward(x, block["router_weight"], down_proj=downs, gate_proj=gates, up_proj=ups, **kwargs)
    _, hint = ops.moe_router(x, block["router_weight"], top_k, renormalize)
    want = ref.moe_forward(
        x, block["router_weight"], gates, ups, downs, top_k, renormalize,
        shared=None if shared == "none" else (block["shared_gate_proj"], block["shared_up_proj"], block["shared_down_proj"]),
        shared_expert_gate=block["shared_expert_gate"] if shared == "gated" else None,
        hint=np.asarray(hint), tol=TIE[dtype],
    )
    return got, want


@pytest.mark.parametrize("shared", ["none", "ungated", "gated"])
@pytest.mark.parametrize("layout", ["fused", "per_expert"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_forward_matches_reference(isa, rng, dtype, layout, shared):
    t, e, k, h, i, i_s = 9, 8, 2, 32, 16, 24
    block = random_block(rng, e, h, i, i_s, dtype)
    x = make(rng.standard_normal((t, h)), dtype)
    got, want = run_both(x, block, k, True, layout, shared, dtype)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert_close(got, want, dtype)


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "t,e,k",
    [(1, 4, 1), (1, 8, 8), (3, 16, 2), (5, 6, 6), (48, 8, 3), (130, 4, 2)],
    ids=["T1-k1", "T1-kE", "idle-experts", "kE", "prefill", "many-tokens"],
)
def test_forward_shapes(isa, rng, t, e, k, dtype, renormalize):
    block = random_block(rng, e, 24, 8, 12, dtype)
    x = make(rng.standard_normal((t, 24)), dtype)
    got, want = run_both(x, block, k, renormalize, "fused", "gated", dtype)
    assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_forward_all_tokens_to_one_expert(rng, dtype):
    t, e, h = 16, 8, 16
    block = random_block(rng, e, h, 8, 8, dtype)
    router = np.zeros((e, h), np.float32)
    router[5] = 4.0  # x > 0 below, so expert 5 wins every token by a wide margin
    block["router_weight"] = make(router, dtype)
    x = make(np.abs(rng.standard_normal((t, h))) + 0.1, dtype)
    _, experts = ops.moe_router(x, block["router_weight"], 1)
    assert np.all(np.asarray(experts) == 5)
    got, want = run_both(x, block, 1, True, "per_expert", "none", dtype)
    assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_forward_on_non_contiguous_inputs(rng, dtype):
    t, e, k, h, i = 7, 6, 2, 16, 8
    block = random_block(rng, e, h, i, 8, dtype)
    x_t = make(rng.standard_normal((h, t)), dtype).T  # column-major tokens
    x_s = make(rng.standard_normal((2 * t, h)), dtype)[::2]  # every other row
    block_t = dict(block)
    block_t["gate_up_proj"] = make(ref.as64(block["gate_up_proj"]).transpose(0, 2, 1), dtype).transpose(0, 2, 1)
    block_t["down_proj"] = make(ref.as64(block["down_proj"]).transpose(0, 2, 1), dtype).transpose(0, 2, 1)
    block_t["shared_expert_gate"] = make(ref.as64(block["shared_expert_gate"]).reshape(-1), dtype)  # (H,)
    for x in (x_t, x_s):
        for b in (block, block_t):
            got, want = run_both(x, b, k, dtype=dtype)
            assert_close(got, want, dtype)


def test_forward_with_no_tokens_is_empty(rng):
    block = random_block(rng, 4, 16, 8, 8, "float32")
    out = ops.moe_forward(np.zeros((0, 16), np.float32), block["router_weight"], block["gate_up_proj"], block["down_proj"], top_k=2,
                          shared_gate_proj=block["shared_gate_proj"], shared_up_proj=block["shared_up_proj"],
                          shared_down_proj=block["shared_down_proj"], shared_expert_gate=block["shared_expert_gate"])
    assert out.shape == (0, 16) and out.dtype == np.float32


def test_forward_x_dtype_may_differ_from_weights(rng):
    """f32 activations with bf16 weights: output in f32, within bf16 tolerance."""
    block = random_block(rng, 8, 32, 16, 16, "bfloat16")
    x = rng.standard_normal((6, 32)).astype(np.float32)
    got, want = run_both(x, block, 2, dtype="bfloat16")
    assert got.dtype == np.float32
    assert_close(got, want, "bfloat16")


def test_forward_writes_into_out(rng):
    block = random_block(rng, 4, 16, 8, 8, "float32")
    x = rng.standard_normal((3, 16)).astype(np.float32)
    out = np.full((3, 16), np.nan, np.float32)
    result = ops.moe_forward(x, block["router_weight"], block["gate_up_proj"], block["down_proj"], top_k=2, out=out)
    assert result is out
    want = ops.moe_forward(x, block["router_weight"], block["gate_up_proj"], block["down_proj"], top_k=2)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_forward_prefill_sized(isa, rng, dtype):
    """Enough tokens and width for the blocked microkernels (and their tails: 300 rows, H 136)."""
    t, e, k, h, i = 300, 8, 2, 136, 96
    block = random_block(rng, e, h, i, 64, dtype)
    x = make(rng.standard_normal((t, h)), dtype)
    got, want = run_both(x, block, k, True, "fused", "gated", dtype)
    assert_close(got, want, dtype)
