#!/usr/bin/env bash
# Every test of rio_rt: the Rust crates (cargo test, no Python) and the Python package (pytest,
# against numpy/torch/transformers references). Sets up its own virtualenv (.venv, or $RIO_RT_VENV)
# with the test extra (torch and transformers are test-only dependencies; pip's cache makes reruns
# quick). The CUDA kernels are compiled for sm_80/sm_90 by nvcc from PyPI (pinned 13.0) and embedded in
# the extension; GPU tests skip themselves on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${RIO_RT_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip

echo "== CUDA toolchain (nvcc 13.0 from PyPI) and every kernel compiled for sm_80 and sm_90"
eval "$(scripts/install_cuda_toolchain.sh "$venv")"
scripts/compile_kernels.sh
"$venv/bin/python" -m pip install -q -e ".[test]"

echo "== cargo test (Rust core, no Python)"
cargo test --workspace --exclude rio-py

echo "== pytest (Python surface, parity with references)"
"$venv/bin/python" -m pytest -q -ra tests
