"""Bad arguments raise ValueError/TypeError naming the argument, what was expected and what was given."""
from __future__ import annotations

import numpy as np
import pytest

from rio_rt import ops

torch = pytest.importorskip("torch")

F = np.float32
T, H, E, I, K = 3, 8, 4, 3, 2


def arrays():
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((T, H)).astype(F),
        "router_weight": rng.standard_normal((E, H)).astype(F),
        "gate_up_proj": rng.standard_normal((E, 2 * I, H)).astype(F),
        "down_proj": rng.standard_normal((E, H, I)).astype(F),
    }


def forward(**changes):
    a = arrays()
    kwargs = {"top_k": K}
    for key, value in changes.items():
        (a if key in a else kwargs)[key] = value
    return ops.moe_forward(a.pop("x"), a.pop("router_weight"), a.pop("gate_up_proj"), a.pop("down_proj"), **a, **kwargs)


S = {"shared_gate_proj": np.zeros((2, H), F), "shared_up_proj": np.zeros((2, H), F), "shared_down_proj": np.zeros((H, 2), F)}

FORWARD_CASES = [
    # (changes, exception, message pattern)
    ({"x": np.zeros((T, H))}, TypeError, r"x: expected dtype bfloat16, float16 or float32, got float64"),
    ({"x": np.zeros((T, H), np.int32)}, TypeError, r"x: expected dtype .* got int32"),
    ({"x": np.zeros((T, H), ">f4")}, TypeError, r"x: .*big-endian"),
    ({"x": np.zeros((T, 5), F)}, ValueError, r"x: expected shape \(T, H\) = \(\*, 8\), got \[3, 5\]"),
    ({"x": np.zeros(H, F)}, ValueError, r"x: expected shape \(T, H\)"),
    ({"x": [[0.0] * H] * T}, TypeError, r"x: expected a numpy array or a torch tensor, got list"),
    ({"x": "tokens"}, TypeError, r"x: expected a numpy array or a torch tensor, got str"),
    ({"router_weight": np.zeros((E, 5), F)}, ValueError, r"router_weight: expected shape \(E, H\) = \(4, 8\), got \[4, 5\]"),
    ({"router_weight": np.zeros((E + 1, H), F)}, ValueError, r"router_weight: expected shape \(E, H\) = \(4, 8\), got \[5, 8\]"),
    ({"gate_up_proj": np.zeros((E, 2 * I + 1, H), F)}, ValueError, r"gate_up_proj: expected shape \(E, 2\*I, H\)"),
    ({"down_proj": np.zeros((E, H, I + 1), F)}, ValueError, r"down_proj: expected shape \(E, H, I\) = \(4, 8, 3\), got \[4, 8, 4\]"),
    ({"down_proj": np.zeros((H, I), F)}, ValueError, r"down_proj: expected shape \(E, H, I\)"),
    ({"down_proj": np.zeros((E, H, I), np.float16)}, TypeError, r"down: expected dtype float32 \(the dtype of the expert weights\), got float16"),
    ({"top_k": E + 1}, ValueError, r"top_k: must be in 1..=4 \(the number of experts\), got 5"),
    ({"top_k": 0}, ValueError, r"top_k: must be at least 1, got 0"),
    ({"top_k": -2}, ValueError, r"top_k: must be at least 1, got -2"),
    ({"top_k": True}, TypeError, r"top_k: expected an int, got bool"),
    ({"top_k": "2"}, TypeError, r"top_k: expected an int, got str"),
    ({"x": np.full((T, H), np.nan, F)}, ValueError, r"x: router logit for token 0, expert 0 is NaN"),
    ({"router_weight": np.full((E, H), np.inf, F)}, ValueError, r"NaN or Inf"),
    ({"gate_up_proj": None}, ValueError, r"gate_up_proj: give either gate_up_proj .* or both gate_proj and up_proj"),
    ({"gate_proj": [np.zeros((I, H), F)] * E, "up_proj": [np.zeros((I, H), F)] * E}, ValueError, r"not both or neither"),
    ({"shared_gate_proj": np.zeros((2, H), F)}, ValueError, r"shared_gate_proj: .* give all three or none"),
    ({"shared_expert_gate": np.zeros((1, H), F)}, ValueError, r"shared_expert_gate: given without"),
    ({**S, "shared_expert_gate": np.zeros((2, H), F)}, ValueError, r"shared_expert_gate: expected shape \(1, H\) = \(1, 8\), got \[2, 8\]"),
    ({**S, "shared_down_proj": np.zeros((H, 3), F)}, ValueError, r"shared_down_proj: expected shape \(H, I_s\) = \(8, 2\), got \[8, 3\]"),
    ({"out": np.zeros((T, H - 1), F)}, ValueError, r"out: expected shape \(3, 8\), got \[3, 7\]"),
    ({"out": np.zeros((T, H), np.float64)}, TypeError, r"out: expected dtype .* got float64"),
    ({"out": np.zeros((H, T), F).T}, ValueError, r"out: must be a contiguous"),
    ({"out": np.broadcast_to(np.zeros(H, F), (T, H))}, ValueError, r"out: the array is read-only"),
]


@pytest.mark.parametrize("changes,exc,pattern", FORWARD_CASES, ids=[c[2][:40] for c in FORWARD_CASES])
def test_moe_forward_rejects(changes, exc, pattern):
    with pytest.raises(exc, match=pattern):
        forward(**changes)


def test_per_expert_layout_errors():
    a = arrays()
    gates = [np.zeros((I, H), F)] * E
    downs = [np.zeros((H, I), F)] * E
    with pytest.raises(TypeError, match=r"gate_proj: expected a list of \(I, H\) tensors, one per expert, got ndarray"):
        ops.moe_forward(a["x"], a["router_weight"], down_proj=downs, gate_proj=np.zeros((E, I, H), F), up_proj=gates, top_k=K)
    with pytest.raises(ValueError, match=r"experts: 3 gate, 4 up and 4 down matrices"):
        ops.moe_forward(a["x"], a["router_weight"], down_proj=downs, gate_proj=gates[:3], up_proj=gates, top_k=K)
    with pytest.raises(ValueError, match=r"gate_proj\[1\]: expected shape \(I, H\), got \[3\]"):
        ops.moe_forward(a["x"], a["router_weight"], down_proj=downs, gate_proj=[gates[0], np.zeros(I, F)] + gates[2:], up_proj=gates, top_k=K)
    with pytest.raises(ValueError, match=r"experts\[2\].up: expected shape \(I, H\) = \(3, 8\), got \[3, 7\]"):
        ops.moe_forward(a["x"], a["router_weight"], down_proj=downs, gate_proj=gates, up_proj=gates[:2] + [np.zeros((I, 7), F)] + gates[3:], top_k=K)
    with pytest.raises(TypeError, match=r"down_proj: required"):
        ops.moe_forward(a["x"], a["router_weight"], a["gate_up_proj"], top_k=K)


def test_router_and_topk_errors():
    a = arrays()
    with pytest.raises(ValueError, match=r"top_k: must be in 1..=4"):
        ops.moe_router(a["x"], a["router_weight"], 5)
    with pytest.raises(ValueError, match=r"x: expected shape \(T, H\) = \(\*, 8\), got \[3, 4\]"):
        ops.moe_router(a["x"][:, :4], a["router_weight"], 1)
    with pytest.raises(ValueError, match=r"router_weight: expected shape \(E, H\), got \[8\]"):
        ops.moe_router(a["x"], a["router_weight"][0], 1)
    with pytest.raises(ValueError, match=r"logits: value at token 1, expert 2 is inf"):
        ops.moe_topk_softmax(np.array([[0, 0, 0], [0, 0, np.inf]], F), 1)
    with pytest.raises(ValueError, match=r"logits: value at token 0, expert 0 is NaN"):
        ops.moe_topk_softmax(np.array([[np.nan, 0]], F), 1)
    with pytest.raises(ValueError, match=r"logits: expected shape \(T, E\)"):
        ops.moe_topk_softmax(np.zeros(4, F), 1)


def test_dispatch_errors():
    with pytest.raises(ValueError, match=r"experts: value 4 at flat index 1 is outside 0..4 \(num_experts\)"):
        ops.moe_dispatch(np.array([[0, 4]], np.int32), 4)
    with pytest.raises(ValueError, match=r"experts: value -1 at flat index 1"):
        ops.moe_dispatch(np.array([[0, -1]], np.int64), 4)
    with pytest.raises(TypeError, match=r"experts: expected dtype int32 or int64, got float32"):
        ops.moe_dispatch(np.array([[0, 1]], F), 4)
    with pytest.raises(ValueError, match=r"num_experts: must be at least 1, got 0"):
        ops.moe_dispatch(np.array([[0]], np.int32), 0)
    with pytest.raises(ValueError, match=r"experts: expected shape \(T, k\) or \(T\*k,\)"):
        ops.moe_dispatch(np.zeros((1, 2, 2), np.int32), 4)


def test_grouped_gemm_and_combine_errors():
    x, w = np.zeros((4, 8), F), np.zeros((2, 3, 8), F)
    with pytest.raises(ValueError, match=r"offsets: must rise from 0 to 4 \(the rows of x\) in 2 steps"):
        ops.grouped_gemm(x, w, [0, 1, 3])
    with pytest.raises(ValueError, match=r"offsets: must rise from 0 to 4"):
        ops.grouped_gemm(x, w, [0, 4])
    with pytest.raises(ValueError, match=r"offsets: value -1 is outside"):
        ops.grouped_gemm(x, w, [0, -1, 4])
    with pytest.raises(TypeError, match=r"offsets: expected an int array or a list of ints, got str"):
        ops.grouped_gemm(x, w, "0,2,4")
    with pytest.raises(ValueError, match=r"x: expected shape \(S, K\) = \(\*, 8\), got \[4, 7\]"):
        ops.grouped_gemm(np.zeros((4, 7), F), w, [0, 1, 4])
    with pytest.raises(ValueError, match=r"weights: needs at least one expert"):
        ops.grouped_gemm(x, [], [0])
    with pytest.raises(TypeError, match=r"weights\[1\]: expected dtype .* got float64"):
        ops.grouped_gemm(x, [w[0], np.zeros((3, 8))], [0, 1, 4])
    with pytest.raises(ValueError, match=r"position: value 4 at flat index 3 is outside 0..4"):
        ops.moe_combine(np.zeros((4, 8), F), np.zeros((2, 2), F), np.array([0, 1, 2, 4], np.int32))
    with pytest.raises(ValueError, match=r"position: expected shape \(T\*k,\) = \(4\) or \(T, k\) = \(2, 2\), got \[3\]"):
        ops.moe_combine(np.zeros((4, 8), F), np.zeros((2, 2), F), np.array([0, 1, 2], np.int32))


def test_torch_specific_errors():
    a = arrays()
    with pytest.raises(ValueError, match=r"x: expected a CPU tensor"):
        ops.moe_router(torch.zeros(T, H, device="meta"), a["router_weight"], 1)
    with pytest.raises(TypeError, match=r"x: expected dtype bfloat16, float16 or float32, got float64"):
        ops.moe_router(torch.zeros(T, H, dtype=torch.float64), a["router_weight"], 1)
    with pytest.raises(TypeError, match=r"experts: expected dtype int32 or int64, got bool"):
        ops.moe_dispatch(torch.zeros(2, 2, dtype=torch.bool), 4)


@pytest.mark.parametrize("t", [0, 1])
def test_zero_size_inputs_give_empty_results(t):
    """T = 0 is not an error: every op returns empty results of the right shapes."""
    a = arrays()
    x = a["x"][:t] if t else np.zeros((0, H), F)
    assert forward(x=x).shape == (t, H)
    weights, experts = ops.moe_router(x, a["router_weight"], K)
    assert weights.shape == (t, K)
    counts, offsets, order, position = ops.moe_dispatch(experts, E)
    assert order.shape == (t * K,) and int(offsets[-1]) == t * K
    assert ops.grouped_gemm(np.zeros((0, H), F), np.zeros((E, 5, H), F), [0] * (E + 1)).shape == (0, 5)
    assert ops.moe_combine(np.zeros((0, H), F), np.zeros((0, K), F), np.zeros((0, K), np.int32)).shape == (0, H)
    # zero hidden size flows through too
    assert ops.moe_router(np.zeros((2, 0), F), np.zeros((E, 0), F), 1)[1].shape == (2, 1)
