#!/usr/bin/env bash
# The whole-model decode comparison of issue 4: rio_rt vs transformers (bf16) vs llama.cpp (bf16 GGUF) on
# the same random checkpoint with the Qwen3.5-35B-A3B layer shapes (hidden 2048, 256 experts top-8, I 512,
# shared 512, 16/2 heads x 256, Gated DeltaNet 16/32 heads x 128) in 4 layers (3 GDN + 1 attention) with a
# 32k vocabulary: about 0.62 GB of weights read per decoded token. Prefill tokens/s at 64 and 512 tokens,
# decode tokens/s after a 64-token prefill, decode GB/s against the read bandwidth and prefill against the
# bf16 GEMM peak, both measured in the same run; systems interleaved over several rounds.
#
# Reproduce (repository root, the virtualenv with the package + torch/transformers/matplotlib active):
#   pip install -e . && pip install torch transformers matplotlib pyyaml
#   benches/bench_decode.sh                  # or: benches/bench_decode.sh --threads 2 --repeats 5
# What it does, each step reused when already done:
#   1. benches/llama_cpp/build.sh: llama-bench + convert_hf_to_gguf.py from PyPI's llama-cpp-python source
#      package, into bench-results/llama.cpp/ (the first build takes 10-30 minutes on 2 cores);
#   2. the benchmark checkpoint (numpy, deterministic, 7 GB) into bench-results/checkpoints/;
#   3. its bf16 GGUF (7 GB) next to it, via benches/llama_cpp/convert.py;
#   4. `rio-rt bench decode`, writing bench-results/decode-35b.{json,txt,png}.
# Needs ~15 GB of disk and ~16 GB of free memory; run it on a quiet machine (the peaks and the systems share
# the same cores and memory bus). Extra arguments go to `rio-rt bench decode`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-results
mkdir -p "$out"
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
export PYTHON

llama_ok=1
if ! benches/llama_cpp/build.sh "$out/llama.cpp" > "$out/llama.cpp-build.log" 2>&1; then
  echo "llama.cpp build failed (see $out/llama.cpp-build.log): benchmarking without it" >&2
  llama_ok=0
fi
systems=rio,transformers
if [[ $llama_ok == 1 ]]; then systems=$systems,llama.cpp; fi

args=(--cache-dir "$out/checkpoints" --llama-cpp-dir "$out/llama.cpp" --systems "$systems"
      --prompt-lengths 64,512 --decode-tokens 64 --repeats 3 "$@")
rio-rt bench decode "${args[@]}" --json --plot "$out/decode-35b.png" > "$out/decode-35b.json"
"$PYTHON" - "$out/decode-35b.json" > "$out/decode-35b.txt" <<'PY'
import json, sys
from rio_rt.bench.decode import format_table
print(format_table(json.load(open(sys.argv[1]))))
PY
cat "$out/decode-35b.txt"
echo "saved $out/decode-35b.json, $out/decode-35b.txt, $out/decode-35b.png" >&2
