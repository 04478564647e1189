"""The GPU benchmark of benches/gpu/run.sh: one MoE layer of the 35B, 122B and 397B shapes on the
GPU (rio_rt.bench.experts_cuda, also `rio-rt bench experts --device cuda`).

    python3 benches/gpu/bench_moe.py [--shapes qwen3.5-35b,...] [--decode 1,8,64] [--prefill 512,2048,4096] [--json out.json]
"""
from __future__ import annotations

import argparse

from rio_rt.bench import experts_cuda
from rio_rt.bench.shapes import NAMED_SHAPES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(NAMED_SHAPES))
    ap.add_argument("--decode", default="1,8,64")
    ap.add_argument("--prefill", default="512,2048,4096")
    ap.add_argument("--json")
    args = ap.parse_args()
    shapes = [NAMED_SHAPES[s] for s in args.shapes.split(",")]
    res = experts_cuda.run(shapes, [int(v) for v in args.decode.split(",")], [int(v) for v in args.prefill.split(",")])
    if args.json:
        experts_cuda.write_json(res, args.json)


if __name__ == "__main__":
    main()
