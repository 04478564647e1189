"""The CUDA kernels against the CPU backend and float64 torch references, on many shapes and the
edge cases of MoE routing (empty experts, one token, every token on one expert).

Marked ``gpu``: skipped with the backend's reason where no usable CUDA GPU is found. Run on a GPU
machine with ``benches/gpu/run.sh`` (which also runs them under compute-sanitizer memcheck)."""
from __future__ import annotations

import numpy as np
import pytest

import rio_rt
from rio_rt import cuda

torch = pytest.importorskip("torch")
from cuda_reference import DTYPES, assert_close, gpu_marks, moe_block, router  # noqa: E402

pytestmark = gpu_marks()

# Float64 reference vs kernels: bf16 inputs and outputs keep ~3 significant digits.
TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3, torch.float32: 1e-4}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, dtype, seed, scale=1.0):
    return (torch.randn(*shape, generator=_gen(seed)) * scale).to(dtype)


def _close(got: torch.Tensor, want: torch.Tensor, dtype, what: str):
    assert_close(got, want, TOL[dtype], what)


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("tokens,experts,top_k", [(1, 8, 2), (7, 64, 8), (64, 128, 8), (65, 256, 8), (300, 512, 10), (33, 512, 16)])
def test_router_matches_cpu_backend_and_torch(dtype, tokens, experts, top_k):
    dt = DTYPES[dtype]
    h = 256
    x = _randn(tokens, h, dtype=dt, seed=1)
    w = _randn(experts, h, dtype=dt, seed=2, scale=0.1)
    w_gpu, e_gpu = cuda.moe_route(x.cuda(), w.cuda(), top_k, renormalize=True)
    w_cpu, e_cpu = rio_rt.ops.moe_router(x, w, top_k, renormalize=True)
    e_ref, w_ref = router(x, w, top_k, True)
    # Same experts as the CPU backend (same order of operations, ties to the lower index) ...
    agree = (e_gpu.cpu() == torch.as_tensor(np.asarray(e_cpu)).long()).float().mean()
    assert agree >= 0.99, f"only {float(agree):.3f} of the expert choices agree with the CPU backend"
    torch.testing.assert_close(w_gpu.cpu(), torch.as_tensor(np.asarray(w_cpu)).float(), atol=1e-4, rtol=1e-3)
    # ... and the float64 reference's weights, sorted decreasing.
    torch.testing.assert_close(w_gpu.cpu().double(), w_ref.double(), atol=2e-3, rtol=2e-2)
    assert torch.all(w_gpu[:, :-1] >= w_gpu[:, 1:])


def test_router_without_renormalisation_returns_softmax_probabilities():
    x = _randn(5, 64, dtype=torch.float32, seed=3)
    w = _randn(32, 64, dtype=torch.float32, seed=4)
    w_gpu, _ = cuda.moe_route(x.cuda(), w.cuda(), 4, renormalize=False)
    _, w_ref = router(x, w, 4, False)
    torch.testing.assert_close(w_gpu.cpu().double(), w_ref.double(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "experts_of",
    [
        pytest.param(lambda t, k, e: torch.randint(0, e, (t, k), generator=_gen(5)), id="random"),
        pytest.param(lambda t, k, e: torch.zeros(t, k, dtype=torch.long) + torch.arange(k), id="all-tokens-on-the-first-experts"),
        pytest.param(lambda t, k, e: (torch.arange(t * k) % 3).reshape(t, k) * (e // 3), id="most-experts-empty"),
    ],
)
@pytest.mark.parametrize("tokens,top_k,num_experts", [(1, 1, 4), (1, 8, 512), (100, 8, 64), (4096, 10, 512)])
def test_dispatch_matches_cpu_backend(experts_of, tokens, top_k, num_experts):
    experts = experts_of(tokens, top_k, num_experts)
    if top_k > num_experts:
        pytest.skip("k > E")
    got = cuda.moe_dispatch(experts, num_experts)
    want = rio_rt.ops.moe_dispatch(experts.numpy().astype(np.int64), num_experts)
    for name, g, w in zip(("counts", "offsets", "order", "position"), got, want):
        assert torch.equal(g.reshape(-1), torch.as_tensor(np.asarray(w)).long().reshape(-1)), f"{name} differs from the CPU backend"


def test_dispatch_rejects_an_expert_out_of_range():
    with pytest.raises(ValueError, match="only 4 experts"):
        cuda.moe_dispatch(torch.tensor([[0, 4]]), 4)


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
@pytest.mark.parametrize(
    "counts,n,k",
    [
        ([1], 64, 64),  # one row
        ([0, 3, 0, 5], 96, 128),  # empty experts, decode path
        ([200, 0, 1, 57], 256, 512),  # tensor-core path, ragged tiles
        ([1000], 130, 72),  # all rows on one expert; N and K not multiples of the tile
        ([17] * 64, 128, 256),  # many small groups
        ([5, 9], 33, 20),  # K not a multiple of 8: scalar path
    ],
)
def test_grouped_gemm_matches_float64(dtype, counts, n, k):
    dt = DTYPES[dtype]
    s = sum(counts)
    x = _randn(s, k, dtype=dt, seed=6)
    w = _randn(len(counts), n, k, dtype=dt, seed=7, scale=k**-0.5)
    offsets = [0] + list(np.cumsum(counts))
    got = cuda.grouped_gemm(x.cuda(), w.cuda(), offsets)
    want = torch.zeros(s, n, dtype=torch.float64)
    for e in range(len(counts)):
        a, b = offsets[e], offsets[e + 1]
        want[a:b] = x[a:b].double() @ w[e].double().T
    _close(got, want, dt if dt != torch.bfloat16 else torch.float16, "grouped_gemm")
    # The CPU backend returns x's dtype (rounded), the GPU fp32 here.
    cpu = rio_rt.ops.grouped_gemm(x, [w[e] for e in range(len(counts))], offsets)
    _close(got, torch.as_tensor(np.asarray(cpu)), dt, "grouped_gemm vs CPU backend")


def test_grouped_gemm_writes_the_weight_dtype_in_place():
    x = _randn(300, 128, dtype=torch.bfloat16, seed=8).cuda()
    w = _randn(2, 64, 128, dtype=torch.bfloat16, seed=9, scale=0.1).cuda()
    out = torch.empty(300, 64, dtype=torch.bfloat16, device="cuda")
    got = cuda.grouped_gemm(x, w, [0, 120, 300], out=out)
    assert got.data_ptr() == out.data_ptr()
    want = torch.cat([x[:120].double() @ w[0].double().T, x[120:].double() @ w[1].double().T])
    _close(out, want, torch.bfloat16, "grouped_gemm bf16 out")


def _moe_weights(dtype, e, h, inter, shared_inter, seed):
    return dict(
        router_weight=_randn(e, h, dtype=dtype, seed=seed, scale=h**-0.5),
        gate_up_proj=_randn(e, 2 * inter, h, dtype=dtype, seed=seed + 1, scale=h**-0.5),
        down_proj=_randn(e, h, inter, dtype=dtype, seed=seed + 2, scale=inter**-0.5),
        shared=(
            _randn(shared_inter, h, dtype=dtype, seed=seed + 3, scale=h**-0.5),
            _randn(shared_inter, h, dtype=dtype, seed=seed + 4, scale=h**-0.5),
            _randn(h, shared_inter, dtype=dtype, seed=seed + 5, scale=shared_inter**-0.5),
        )
        if shared_inter
        else None,
        shared_gate=_randn(1, h, dtype=dtype, seed=seed + 6, scale=h**-0.5) if shared_inter else None,
    )


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
@pytest.mark.parametrize(
    "tokens,experts,top_k,hidden,inter,shared_inter",
    [
        (1, 8, 2, 64, 32, 0),  # decode, one token
        (5, 64, 8, 128, 64, 64),  # decode with a gated shared expert
        (64, 128, 8, 256, 128, 128),  # largest decode batch
        (65, 16, 4, 128, 96, 0),  # first prefill size
        (700, 512, 10, 256, 128, 256),  # prefill, many experts, k = 10
    ],
)
def test_moe_forward_matches_cpu_backend_and_float64(dtype, tokens, experts, top_k, hidden, inter, shared_inter):
    dt = DTYPES[dtype]
    m = _moe_weights(dt, experts, hidden, inter, shared_inter, seed=10)
    x = _randn(tokens, hidden, dtype=dt, seed=20)
    shared = m["shared"]
    kwargs = {}
    if shared is not None:
        kwargs = dict(shared_gate_proj=shared[0].cuda(), shared_up_proj=shared[1].cuda(), shared_down_proj=shared[2].cuda(),
                      shared_expert_gate=m["shared_gate"].cuda())
    got = cuda.moe_forward(x.cuda(), m["router_weight"].cuda(), m["gate_up_proj"].cuda(), m["down_proj"].cuda(), top_k, **kwargs)
    assert got.dtype == dt and got.shape == x.shape
    want = moe_block(x, m["router_weight"], m["gate_up_proj"], m["down_proj"], top_k, True, shared, m["shared_gate"])
    _close(got, want, dt, "moe_forward vs float64")
    cpu_kwargs = {}
    if shared is not None:
        cpu_kwargs = dict(shared_gate_proj=shared[0], shared_up_proj=shared[1], shared_down_proj=shared[2], shared_expert_gate=m["shared_gate"])
    cpu = rio_rt.ops.moe_forward(x, m["router_weight"], m["gate_up_proj"], m["down_proj"], top_k=top_k, **cpu_kwargs)
    _close(got, torch.as_tensor(cpu), dt, "moe_forward vs CPU backend")


def test_moe_forward_with_every_token_on_one_expert():
    dt = torch.bfloat16
    m = _moe_weights(dt, 8, 128, 64, 0, seed=30)
    m["router_weight"][3] += 10.0  # expert 3 wins for every token
    x = _randn(200, 128, dtype=dt, seed=31).abs()
    got = cuda.moe_forward(x.cuda(), m["router_weight"].cuda(), m["gate_up_proj"].cuda(), m["down_proj"].cuda(), 1)
    want = moe_block(x, m["router_weight"], m["gate_up_proj"], m["down_proj"], 1, True)
    _close(got, want, dt, "moe_forward, one expert")


def test_moe_forward_runs_on_the_current_stream():
    dt = torch.bfloat16
    m = _moe_weights(dt, 16, 128, 64, 0, seed=40)
    x = _randn(32, 128, dtype=dt, seed=41).cuda()
    args = (m["router_weight"].cuda(), m["gate_up_proj"].cuda(), m["down_proj"].cuda(), 4)
    want = cuda.moe_forward(x, *args)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        got = cuda.moe_forward(x * 1, *args)  # x * 1 is produced on s itself
    s.synchronize()
    assert torch.equal(got, want)


def test_cuda_errors_are_python_exceptions():
    w = _randn(4, 8, dtype=torch.bfloat16, seed=50).cuda()
    with pytest.raises(TypeError, match="x"):
        cuda.moe_route(torch.zeros(2, 8, dtype=torch.float32, device="cuda"), w, 2)
    with pytest.raises(ValueError, match="top_k"):
        cuda.moe_route(torch.zeros(2, 8, dtype=torch.bfloat16, device="cuda"), w, 5)
    with pytest.raises(ValueError, match="expected CUDA tensors"):
        cuda.moe_route(torch.zeros(2, 8, dtype=torch.bfloat16), w, 2)


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
@pytest.mark.parametrize("m,n,k", [(1, 4096, 2048), (77, 1000, 264), (2048, 512, 4096)])
def test_dense_gemm_through_cublas(dtype, m, n, k):
    dt = DTYPES[dtype]
    x, w = _randn(m, k, dtype=dt, seed=60), _randn(n, k, dtype=dt, seed=61, scale=k**-0.5)
    got = cuda.dense_gemm(x.cuda(), w.cuda(), out=torch.empty(m, n, dtype=torch.float32, device="cuda"))
    _close(got, x.double() @ w.double().T, torch.float16, "dense_gemm")
