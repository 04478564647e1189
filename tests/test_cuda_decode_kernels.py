"""The decode kernels (RMSNorm(1+w), partial RoPE, attention decode, Gated DeltaNet, sampling,
soft-embedding decoding) against float64 torch twins written from transformers' formulas.

Marked ``gpu``: skipped with the backend's reason where no usable CUDA GPU is found."""
from __future__ import annotations

import pytest

from rio_rt import cuda

torch = pytest.importorskip("torch")
from cuda_reference import DTYPES, assert_close, gpu_marks  # noqa: E402

pytestmark = gpu_marks()

TOL = {torch.bfloat16: 1.6e-2, torch.float16: 2e-3, torch.float32: 2e-5}


def _randn(*shape, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


def _close(got, want, dtype, what):
    assert_close(got, want, TOL[dtype], what)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rows,hidden", [(1, 64), (7, 2048), (33, 4096), (4, 100)])
def test_rmsnorm_one_plus_w(dtype, rows, hidden):
    dt = DTYPES[dtype]
    x, w = _randn(rows, hidden, dtype=dt, seed=1), _randn(hidden, dtype=dt, seed=2, scale=0.1)
    got = cuda.rmsnorm(x.cuda(), w.cuda(), 1e-6)
    xd = x.double()
    want = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + w.double())
    _close(got, want, dt, "rmsnorm")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("tokens,heads,head_dim,rot_dim,max_pos", [(1, 2, 256, 64, 10), (9, 16, 256, 64, 262_000), (5, 4, 128, 128, 5000)])
def test_partial_rope(dtype, tokens, heads, head_dim, rot_dim, max_pos):
    dt = DTYPES[dtype]
    x = _randn(tokens, heads, head_dim, dtype=dt, seed=3)
    pos = torch.randint(0, max_pos, (tokens,), generator=torch.Generator().manual_seed(4))
    got = cuda.rope_partial(x.clone().cuda(), pos, rot_dim, 1e7)
    inv = 1.0 / (1e7 ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim))
    ang = pos.double()[:, None] * inv[None]
    cos, sin = torch.cos(ang)[:, None], torch.sin(ang)[:, None]
    xd = x.double()
    half = rot_dim // 2
    x1, x2 = xd[..., :half], xd[..., half:rot_dim]
    want = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, xd[..., rot_dim:]], dim=-1)
    # Angles up to 2.6e5 rad: the fp32 angle (as transformers computes it) carries ~1e-2 rad of
    # rounding, so far positions are compared at bf16-level tolerance.
    _close(got, want, dt if max_pos < 10_000 else torch.bfloat16, "rope")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch,q_heads,kv_heads,head_dim,tmax", [(1, 2, 1, 64, 1), (3, 32, 2, 256, 300), (2, 8, 8, 128, 1025)])
def test_attention_decode(dtype, batch, q_heads, kv_heads, head_dim, tmax):
    dt = DTYPES[dtype]
    q = _randn(batch, q_heads, head_dim, dtype=dt, seed=5)
    k = _randn(batch, kv_heads, tmax, head_dim, dtype=dt, seed=6)
    v = _randn(batch, kv_heads, tmax, head_dim, dtype=dt, seed=7)
    lengths = torch.tensor([max(1, tmax - 17 * i) for i in range(batch)], dtype=torch.int32)
    scale = head_dim**-0.5
    got = cuda.attention_decode(q.cuda(), k.cuda(), v.cuda(), lengths, scale)
    want = torch.empty(batch, q_heads, head_dim, dtype=torch.float64)
    rep = q_heads // kv_heads
    for b in range(batch):
        n = int(lengths[b])
        kk = k[b, :, :n].double().repeat_interleave(rep, 0)
        vv = v[b, :, :n].double().repeat_interleave(rep, 0)
        att = torch.softmax((q[b].double()[:, None] @ kk.transpose(1, 2)).squeeze(1) * scale, -1)
        want[b] = (att[:, None] @ vv).squeeze(1)
    _close(got, want, dt, "attention_decode")


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gdn_conv_update_matches_causal_conv1d_update(dtype):
    dt = DTYPES[dtype]
    b, c, kernel, state_len = 3, 300, 4, 4
    x = _randn(b, c, dtype=dt, seed=8)
    state = _randn(b, c, state_len, dtype=dt, seed=9)
    w = _randn(c, kernel, dtype=dt, seed=10, scale=0.5)
    st = state.clone().cuda()
    got = cuda.gdn_conv_update(x.cuda(), st, w.cuda())
    # transformers' torch_causal_conv1d_update: conv over cat(state, x), last position, SiLU.
    full = torch.cat([state.double(), x.double()[..., None]], -1)
    want = torch.nn.functional.silu((full[..., -kernel:] * w.double()[None]).sum(-1))
    _close(got, want, dt, "conv output")
    assert torch.equal(st.cpu(), full[..., -state_len:].to(dt)), "conv state not shifted by one token"


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch,k_heads,v_heads,dk,dv", [(1, 2, 2, 64, 64), (2, 16, 32, 128, 128), (3, 16, 64, 128, 128)])
def test_gdn_recurrent_step_matches_torch_recurrent_gated_delta_rule(dtype, batch, k_heads, v_heads, dk, dv):
    dt = DTYPES[dtype]
    q, k = _randn(batch, k_heads, dk, dtype=dt, seed=11), _randn(batch, k_heads, dk, dtype=dt, seed=12)
    v = _randn(batch, v_heads, dv, dtype=dt, seed=13)
    g = -torch.rand(batch, v_heads, generator=torch.Generator().manual_seed(14))
    beta = torch.rand(batch, v_heads, generator=torch.Generator().manual_seed(15))
    state = _randn(batch, v_heads, dk, dv, seed=16, scale=0.1)
    st = state.clone().cuda()
    got = cuda.gdn_recurrent_step(q.cuda(), k.cuda(), v.cuda(), g.cuda(), beta.cuda(), st)
    # transformers: l2norm(eps 1e-6), q * Dk^-0.5, keys repeated over value heads, then the step.
    rep = v_heads // k_heads

    def l2(x):
        return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6)

    qd = l2(q.double()).repeat_interleave(rep, 1) * dk**-0.5
    kd = l2(k.double()).repeat_interleave(rep, 1)
    s = state.double() * g.double().exp()[..., None, None]
    kv_mem = (s * kd[..., None]).sum(-2)
    delta = (v.double() - kv_mem) * beta.double()[..., None]
    s = s + kd[..., None] * delta[..., None, :]
    want = (s * qd[..., None]).sum(-2)
    _close(got, want, dt, "gdn output")
    _close(st, s, torch.float32 if dt == torch.float32 else torch.float16, "gdn state")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("rows,vocab", [(1, 10), (4, 248_320), (3, 4097)])
def test_argmax(dtype, rows, vocab):
    dt = DTYPES[dtype]
    logits = _randn(rows, vocab, dtype=dt, seed=17)
    logits[0, vocab // 2] = 50.0
    got = cuda.argmax(logits.cuda())
    assert torch.equal(got.cpu(), torch.argmax(logits.float(), -1))


def _filtered_probs(logits, temperature, top_k, top_p, min_p=0.0):
    """Float64 twin of the top-k → top-p → min-p chain on the sorted softmax."""
    p = torch.softmax(logits.double() / temperature, -1)
    vals, idx = torch.sort(p, descending=True, stable=True)
    if top_k:
        vals, idx = vals[:top_k], idx[:top_k]
    before = torch.cumsum(vals, 0) - vals
    keep = before < top_p * vals.sum()
    vals, idx = vals[keep], idx[keep]
    keep = vals >= min_p * vals[0]
    return vals[keep], idx[keep]


@pytest.mark.parametrize("top_k,top_p", [(1, 1.0), (20, 0.95), (64, 0.5)])
def test_sample_top_k_is_the_inverse_cdf_of_the_filtered_distribution(top_k, top_p):
    rows, vocab, temp = 6, 151_936, 0.6
    logits = _randn(rows, vocab, seed=18, scale=3.0)
    u = torch.rand(rows, generator=torch.Generator().manual_seed(19))
    got = cuda.sample_top_k(logits.cuda(), top_k, u.cuda(), temperature=temp, top_p=top_p)
    for r in range(rows):
        vals, idx = _filtered_probs(logits[r], temp, top_k, top_p)
        cdf = torch.cumsum(vals, 0) / vals.sum()
        j = int(torch.searchsorted(cdf, u[r].double(), right=True).clamp(max=len(idx) - 1))
        assert int(got[r]) == int(idx[j]), f"row {r}: drew {int(got[r])}, want {int(idx[j])}"


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("rows,vocab,hidden", [(1, 1000, 64), (3, 248_320, 256), (11, 5000, 2048)])
def test_soft_embedding_full_vocabulary(dtype, rows, vocab, hidden):
    dt = DTYPES[dtype]
    logits = _randn(rows, vocab, seed=20, scale=4.0)
    embed = _randn(vocab, hidden, dtype=dt, seed=21)
    mix, entropy = cuda.soft_embedding_full(logits.cuda(), embed.cuda(), temperature=1.0)
    p = torch.softmax(logits.double(), -1)
    _close(mix, p @ embed.double(), torch.float16, "soft mix")
    want_h = -(p * p.clamp_min(1e-12).log()).sum(-1)
    torch.testing.assert_close(entropy.cpu().double(), want_h, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("temperature,top_k,top_p,min_p,max_topk", [(0.6, 0, 0.95, 0.0, 10), (1.0, 20, 1.0, 0.001, 15), (0.6, 64, 0.95, 0.0, 64)])
def test_soft_embedding_top_k_concept_token(temperature, top_k, top_p, min_p, max_topk):
    rows, vocab, hidden = 4, 151_936, 256
    logits = _randn(rows, vocab, seed=22, scale=3.0)
    embed = _randn(vocab, hidden, dtype=torch.bfloat16, seed=23)
    mix, index, weight, entropy = cuda.soft_embedding_top_k(logits.cuda(), embed.cuda(), temperature, top_k, top_p, min_p, max_topk)
    for r in range(rows):
        vals, idx = _filtered_probs(logits[r], temperature, top_k, top_p, min_p)
        vals, idx = vals[:max_topk], idx[:max_topk]
        w = vals / vals.sum()
        n = len(idx)
        assert torch.equal(index[r, :n].cpu(), idx), f"row {r}: concept-token ids differ"
        assert bool((index[r, n:] == -1).all())
        torch.testing.assert_close(weight[r, :n].cpu().double(), w, atol=1e-5, rtol=1e-4)
        _close(mix[r], (w[:, None] * embed[idx].double()).sum(0), torch.float16, "concept mix")
    p = torch.softmax(logits.double() / temperature, -1)
    torch.testing.assert_close(entropy.cpu().double(), -(p * p.clamp_min(1e-12).log()).sum(-1), atol=1e-4, rtol=1e-4)
