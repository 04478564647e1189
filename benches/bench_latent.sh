#!/usr/bin/env bash
# The latent-reasoning benchmark of issue 5, on the decode benchmark's checkpoint (random bf16 weights with
# the Qwen3.5-35B-A3B layer shapes, 4 layers, 32k vocabulary; built once by `rio-rt bench decode` or here):
#   1. the extra cost of a latent step over an explicit one in the same run: softmax + entropy + soft
#      embedding in the full (pᵀE over the vocabulary), pruned (SwiReasoning's default, skipped mass
#      <= 1e-4) and top-k (Soft Thinking, K = 10) forms, as % of the explicit decode step
#      (target: <= 3% for the pruned and top-k forms on the CPU backend);
#   2. a whole SwiReasoning generation (greedy, official defaults) in rio_rt vs the same algorithm over
#      transformers (tests/reference_reasoning.py) on the same checkpoint and threads (target: >= 15x).
#
# Reproduce (repository root, the virtualenv with the package + torch/transformers active):
#   benches/bench_latent.sh                  # or: benches/bench_latent.sh --threads 2 --steps 64
# Writes bench-results/latent-35b.{json,txt}. Run it on a quiet machine. Extra arguments go to
# `rio-rt bench latent`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-results
mkdir -p "$out"
rio-rt bench latent --cache-dir "$out/checkpoints" --json "$@" > "$out/latent-35b.json"
python - "$out/latent-35b.json" > "$out/latent-35b.txt" <<'PY'
import json, sys
from rio_rt.bench.latent import format_table
print(format_table(json.load(open(sys.argv[1]))))
PY
cat "$out/latent-35b.txt"
