"""``rio-rt bench experts --device cuda``: one MoE layer on the GPU (rio_rt's CUDA kernels) against
torch (``torch._grouped_mm`` when present, and an eager per-expert loop like transformers' experts
forward) and against this GPU's own limits measured in the same run: HBM bandwidth (device copy)
and cuBLAS bf16 GEMM peak (``torch.matmul``).

Decode (1-64 tokens) is reported as the fraction of HBM bandwidth for the bytes it must read (the
distinct experts routed to, router and shared expert); prefill as the fraction of the cuBLAS peak
and against torch. Timings are CUDA-event medians after warm-up.
"""
from __future__ import annotations

import json
import statistics
from typing import Any

from rio_rt import cuda
from rio_rt.bench.shapes import MoeShape


def timed(fn, iters: int = 20, warmup: int = 3) -> float:
    """Median seconds of fn() over CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def hbm_bandwidth() -> float:
    """Bytes/s of a 2 GiB device-to-device copy (read + write)."""
    import torch

    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), iters=10)
    return 2 * src.numel() / t


def cublas_peak(n: int = 8192) -> float:
    """FLOP/s of an n^3 bf16 matmul (cuBLAS through torch)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    t = timed(lambda: a @ b, iters=10)
    return 2 * n**3 / t


def layer(shape: MoeShape, seed: int = 0) -> dict[str, Any]:
    import torch

    h, e, inter, si = shape.hidden, shape.experts, shape.intermediate, shape.shared_intermediate
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*s, scale):
        return (torch.randn(*s, generator=g, device="cuda") * scale).to(torch.bfloat16)

    w = dict(router=rnd(e, h, scale=h**-0.5), gate_up=rnd(e, 2 * inter, h, scale=h**-0.5), down=rnd(e, h, inter, scale=inter**-0.5))
    if si:
        w.update(sg=rnd(si, h, scale=h**-0.5), su=rnd(si, h, scale=h**-0.5), sd=rnd(h, si, scale=si**-0.5), gate=rnd(1, h, scale=h**-0.5))
    return w


def rio_forward(shape: MoeShape, w, x):
    shared = {}
    if "sg" in w:
        shared = dict(shared_gate_proj=w["sg"], shared_up_proj=w["su"], shared_down_proj=w["sd"], shared_expert_gate=w["gate"])
    return cuda.moe_forward(x, w["router"], w["gate_up"], w["down"], shape.top_k, **shared)


def torch_grouped(shape: MoeShape, w, x, experts, weights):
    """The routed experts with torch._grouped_mm on tokens sorted by expert (no shared expert)."""
    import torch

    t, k = experts.shape
    flat = experts.reshape(-1)
    order = torch.argsort(flat, stable=True)
    offs = torch.cumsum(torch.bincount(flat, minlength=shape.experts), 0).to(torch.int32)
    xs = x[order // k]
    gate, up = torch._grouped_mm(xs, w["gate_up"].transpose(-2, -1), offs=offs).chunk(2, dim=-1)
    y = torch._grouped_mm(torch.nn.functional.silu(gate) * up, w["down"].transpose(-2, -1), offs=offs)
    out = torch.zeros(t, shape.hidden, device=x.device, dtype=torch.float32)
    out.index_add_(0, order // k, y.float() * weights.reshape(-1)[order, None])
    return out


def torch_eager(shape: MoeShape, w, x, experts, weights):
    """transformers' eager experts loop: one matmul pair per active expert."""
    import torch

    out = torch.zeros_like(x, dtype=torch.float32)
    for ex in torch.unique(experts).tolist():
        tok, slot = torch.where(experts == ex)
        gate, up = (x[tok] @ w["gate_up"][ex].T).chunk(2, dim=-1)
        y = (torch.nn.functional.silu(gate) * up) @ w["down"][ex].T
        out.index_add_(0, tok, y.float() * weights[tok, slot, None])
    return out


def run(shapes: list[MoeShape], decode: list[int], prefill: list[int], use_torch: bool = True, seed: int = 0) -> dict[str, Any]:
    """Times every shape at every batch; prints one line per row; returns the result document."""
    import torch

    s = cuda.status()
    if not s["available"]:
        raise SystemExit(f"no CUDA GPU: {s['reason']}")
    bw, peak = hbm_bandwidth(), cublas_peak()
    res: dict[str, Any] = {"device": s["devices"][0], "hbm_bytes_per_s": bw, "cublas_bf16_flops": peak, "rows": []}
    print(f"{s['devices'][0]['name']}: HBM copy {bw / 1e12:.2f} TB/s, cuBLAS bf16 {peak / 1e12:.0f} TFLOP/s")
    has_grouped = use_torch and hasattr(torch, "_grouped_mm")
    for shape in shapes:
        w = layer(shape, seed)
        h, e, k, inter, si = shape.hidden, shape.experts, shape.top_k, shape.intermediate, shape.shared_intermediate
        expert_bytes = 3 * inter * h * 2
        for phase, sizes in (("decode", decode), ("prefill", prefill)):
            for t in sizes:
                x = (torch.randn(t, h, device="cuda") * 0.5).to(torch.bfloat16)
                weights, experts = cuda.moe_route(x, w["router"], k)
                active = int(torch.unique(experts).numel())
                row: dict[str, Any] = {"shape": shape.name, "phase": phase, "tokens": t, "active_experts": active}
                row["rio_s"] = timed(lambda: rio_forward(shape, w, x))
                read = active * expert_bytes + e * h * 2 + 3 * si * h * 2 + 2 * t * h * 2
                flops = 2 * t * k * 3 * inter * h + 2 * t * 3 * si * h + 2 * t * e * h
                row["bytes_read"], row["flops"] = read, flops
                row["rio_hbm_fraction"] = read / row["rio_s"] / bw
                row["rio_fraction_of_cublas_peak"] = flops / row["rio_s"] / peak
                # A torch path that fails (an older torch, an unsupported size) is recorded, not fatal.
                if has_grouped:
                    try:
                        row["torch_grouped_mm_s"] = timed(lambda: torch_grouped(shape, w, x, experts, weights))
                    except RuntimeError as e:
                        row["torch_grouped_mm_error"] = str(e).splitlines()[0]
                if use_torch and t <= 512:
                    try:
                        row["torch_eager_s"] = timed(lambda: torch_eager(shape, w, x, experts, weights), iters=5)
                    except RuntimeError as e:
                        row["torch_eager_error"] = str(e).splitlines()[0]
                res["rows"].append(row)
                extra = "".join(f"  {n[:-2]}={row[n] * 1e3:.3f} ms" for n in ("torch_grouped_mm_s", "torch_eager_s") if n in row)
                print(f"{shape.name:13} {phase:7} T={t:5} experts={active:3}  rio={row['rio_s'] * 1e3:.3f} ms  "
                      f"HBM {row['rio_hbm_fraction']:.0%}  cuBLAS-peak {row['rio_fraction_of_cublas_peak']:.0%}{extra}", flush=True)
        del w
        torch.cuda.empty_cache()
    return res


def write_json(res: dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
