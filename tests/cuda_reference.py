"""Plain torch reference twins of the CUDA kernels, computed in float64 on the CPU, and what
the CUDA test modules share: their pytest marks, the dtypes they run in and the error check."""
from __future__ import annotations

import pytest
import torch

from rio_rt import cuda

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def gpu_marks() -> list:
    """``pytestmark`` of a CUDA test module: marked ``gpu``, skipped with the backend's reason
    where no usable CUDA GPU (or no CUDA torch) is found."""
    status = cuda.status()
    reason = status["reason"] or ("torch has no CUDA" if not torch.cuda.is_available() else "")
    return [
        pytest.mark.gpu,
        pytest.mark.skipif(not (status["available"] and torch.cuda.is_available()), reason=f"no CUDA GPU: {reason}"),
    ]


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    """Largest absolute error at most ``tol`` of the largest reference magnitude."""
    got, want = got.double().cpu(), want.double().cpu()
    err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()
    assert err <= tol, f"{what}: max error {err:.3g} of the largest value (tolerance {tol})"


def router(x: torch.Tensor, router_weight: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits in the model dtype (as transformers), softmax in fp32, top-k, renormalise."""
    logits = (x.double() @ router_weight.double().T).to(x.dtype).float()
    probs = torch.softmax(logits, dim=-1)
    w, e = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        w = w / w.sum(dim=-1, keepdim=True)
    return e, w


def moe_block(x, router_weight, gate_up, down, top_k, renormalize, shared=None, shared_gate=None) -> torch.Tensor:
    """The sparse MoE block in float64 with the activation rounded to the weight dtype, as the kernels do."""
    dt = gate_up.dtype
    e, w = router(x, router_weight, top_k, renormalize)
    xd = x.double()
    inter = gate_up.shape[1] // 2
    out = torch.zeros_like(xd)
    for t in range(x.shape[0]):
        for j in range(top_k):
            ex = int(e[t, j])
            g = (gate_up[ex, :inter].double() @ xd[t]).to(dt).double()
            u = (gate_up[ex, inter:].double() @ xd[t]).to(dt).double()
            h = (torch.nn.functional.silu(g) * u).to(dt).double()
            out[t] += float(w[t, j]) * (down[ex].double() @ h)
    if shared is not None:
        sg, su, sd = (m.double() for m in shared)
        g = (xd @ sg.T).to(dt).double()
        u = (xd @ su.T).to(dt).double()
        h = (torch.nn.functional.silu(g) * u).to(dt).double()
        ys = h @ sd.T
        if shared_gate is not None:
            ys = ys * torch.sigmoid(xd @ shared_gate.double().reshape(-1, 1))
        out += ys
    return out
