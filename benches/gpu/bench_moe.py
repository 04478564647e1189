"""GPU benchmark of one MoE layer (rio_rt CUDA kernels) for the 397B, 122B and 35B shapes, against
torch (torch._grouped_mm when present, and an eager per-expert loop like transformers' experts
forward) and against this GPU's own limits measured in the same run: HBM bandwidth (device copy)
and cuBLAS bf16 GEMM peak (torch.matmul).

    python3 benches/gpu/bench_moe.py [--shapes 35b,122b,397b] [--json out.json]

Decode (1-64 tokens) is reported as the fraction of HBM bandwidth for the bytes it must read (the
distinct experts routed to, router and shared expert); prefill as TFLOP/s against torch and the
cuBLAS peak. Timings are CUDA-event medians after warm-up.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from rio_rt import cuda

# Spec table (qwen35moe.md section 5): hidden, experts, top-k, moe intermediate, shared intermediate.
SHAPES = {
    "35b": (2048, 256, 8, 512, 512),
    "122b": (3072, 256, 8, 1024, 1024),
    "397b": (4096, 512, 10, 1024, 1024),
}


def timed(fn, iters: int = 20, warmup: int = 3) -> float:
    """Median seconds of fn() over CUDA events."""
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
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), iters=10)
    return 2 * src.numel() / t


def cublas_peak() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t = timed(lambda: a @ b, iters=10)
    return 2 * 8192**3 / t


def layer(shape: str):
    h, e, k, inter, si = SHAPES[shape]
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = torch.bfloat16

    def rnd(*s, scale):
        return (torch.randn(*s, generator=g, device="cuda") * scale).to(bf)

    return dict(
        h=h, e=e, k=k, inter=inter, si=si,
        router=rnd(e, h, scale=h**-0.5),
        gate_up=rnd(e, 2 * inter, h, scale=h**-0.5),
        down=rnd(e, h, inter, scale=inter**-0.5),
        sg=rnd(si, h, scale=h**-0.5), su=rnd(si, h, scale=h**-0.5), sd=rnd(h, si, scale=si**-0.5),
        gate=rnd(1, h, scale=h**-0.5),
    )


def rio_forward(w, x):
    return cuda.moe_forward(x, w["router"], w["gate_up"], w["down"], w["k"], shared_gate_proj=w["sg"], shared_up_proj=w["su"],
                            shared_down_proj=w["sd"], shared_expert_gate=w["gate"])


def torch_grouped(w, x, experts, weights):
    """The routed experts with torch._grouped_mm on tokens sorted by expert (no shared expert)."""
    t, k = experts.shape
    flat = experts.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=w["e"])
    offs = torch.cumsum(counts, 0).to(torch.int32)
    xs = x[order // k]
    gu = torch._grouped_mm(xs, w["gate_up"].transpose(-2, -1), offs=offs)
    gate, up = gu.chunk(2, dim=-1)
    hmid = torch.nn.functional.silu(gate) * up
    y = torch._grouped_mm(hmid, w["down"].transpose(-2, -1), offs=offs)
    out = torch.zeros(t, w["h"], device=x.device, dtype=torch.float32)
    out.index_add_(0, order // k, y.float() * weights.reshape(-1)[order, None])
    return out


def torch_eager(w, x, experts, weights):
    """transformers' eager experts loop: one matmul pair per active expert."""
    out = torch.zeros_like(x, dtype=torch.float32)
    for ex in torch.unique(experts).tolist():
        tok, slot = torch.where(experts == ex)
        gu = x[tok] @ w["gate_up"][ex].T
        gate, up = gu.chunk(2, dim=-1)
        y = (torch.nn.functional.silu(gate) * up) @ w["down"][ex].T
        out.index_add_(0, tok, y.float() * weights[tok, slot, None])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="35b,122b,397b")
    ap.add_argument("--decode", default="1,8,64")
    ap.add_argument("--prefill", default="512,2048,4096")
    ap.add_argument("--json")
    args = ap.parse_args()
    s = cuda.status()
    if not s["available"]:
        raise SystemExit(f"no CUDA GPU: {s['reason']}")
    bw, peak = hbm_bandwidth(), cublas_peak()
    res = {"device": s["devices"][0], "hbm_bytes_per_s": bw, "cublas_bf16_flops": peak, "layers": []}
    print(f"{s['devices'][0]['name']}: HBM copy {bw / 1e12:.2f} TB/s, cuBLAS bf16 {peak / 1e12:.0f} TFLOP/s")
    has_grouped = hasattr(torch, "_grouped_mm")
    for shape in args.shapes.split(","):
        w = layer(shape)
        h, e, k, inter, si = (w[n] for n in ("h", "e", "k", "inter", "si"))
        expert_bytes = 3 * inter * h * 2
        for phase, sizes in (("decode", args.decode), ("prefill", args.prefill)):
            for t in map(int, sizes.split(",")):
                x = (torch.randn(t, h, device="cuda") * 0.5).to(torch.bfloat16)
                experts, weights = cuda.moe_route(x, w["router"], k)
                active = int(torch.unique(experts).numel())
                row = {"shape": shape, "phase": phase, "tokens": t, "active_experts": active}
                row["rio_s"] = timed(lambda: rio_forward(w, x))
                read = active * expert_bytes + e * h * 2 + 3 * si * h * 2 + 2 * t * h * 2
                flops = 2 * t * k * 3 * inter * h + 2 * t * 3 * si * h
                row["bytes_read"], row["flops"] = read, flops
                row["rio_hbm_fraction"] = read / row["rio_s"] / bw
                row["rio_flops_fraction_of_cublas"] = flops / row["rio_s"] / peak
                if has_grouped:
                    row["torch_grouped_mm_s"] = timed(lambda: torch_grouped(w, x, experts, weights))
                if t <= 512:
                    row["torch_eager_s"] = timed(lambda: torch_eager(w, x, experts, weights), iters=5)
                res["layers"].append(row)
                extra = "".join(f"  {n}={row[n] * 1e3:.3f} ms" for n in ("torch_grouped_mm_s", "torch_eager_s") if n in row)
                print(f"{shape:5} {phase:7} T={t:5} experts={active:3}  rio={row['rio_s'] * 1e3:.3f} ms  "
                      f"HBM {row['rio_hbm_fraction']:.0%}  cuBLAS-peak {row['rio_flops_fraction_of_cublas']:.0%}{extra}")
        del w
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
