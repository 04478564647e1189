#!/usr/bin/env bash
# The expert-throughput comparison of issue 3: one Qwen3.5-35B-shaped MoE layer (256 experts,
# top-8, H 2048, I 512, shared expert 512, bf16) in rio_rt vs transformers' grouped_mm and eager
# experts (torch), with this machine's read bandwidth and bf16 GEMM peak measured in the same run.
#
# Reproduce (repository root, virtualenv active, package + torch/transformers/matplotlib installed):
#   pip install -e . && pip install torch transformers matplotlib
#   benches/bench_experts.sh            # or: benches/bench_experts.sh --threads 2 --seconds 3
# Run it on a quiet machine: the peaks and the layer share the same cores and memory bus.
# Writes bench-results/experts-35b.{json,txt,png} (bench-results/ is gitignored); extra
# arguments go to `rio-rt bench experts`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-results
mkdir -p "$out"
args=(--shape qwen3.5-35b --dtype bf16 --decode 1,8,64 --prefill 512,2048,4096 --seconds 2 "$@")
rio-rt bench experts "${args[@]}" --json --plot "$out/experts-35b.png" > "$out/experts-35b.json"
python - "$out/experts-35b.json" > "$out/experts-35b.txt" <<'PY'
import json, sys
from rio_rt.bench.report import format_table
print(format_table(json.load(open(sys.argv[1]))))
PY
cat "$out/experts-35b.txt"
echo "saved $out/experts-35b.json, $out/experts-35b.txt, $out/experts-35b.png" >&2
