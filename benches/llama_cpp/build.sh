#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` (and unpacks its `convert_hf_to_gguf.py` + `gguf-py`) for the decode
# benchmark (`rio-rt bench decode`, benches/bench_decode.sh), outside the package.
#
# The llama.cpp used is the one vendored by PyPI's `llama-cpp-python` SOURCE package (it runs `qwen35moe`),
# fetched with pip, built with cmake in Release with native CPU flags (-DGGML_NATIVE=ON), CPU backend only.
#
# Usage (repository root, the bench virtualenv active or PYTHON pointing at its python):
#   benches/llama_cpp/build.sh [DEST]          # DEST defaults to bench-results/llama.cpp (gitignored)
# Env: PYTHON (default: .venv/bin/python, else python3), LLAMA_CPP_PYTHON_VERSION (default: newest on PyPI),
#      JOBS (parallel compile jobs, default: nproc), NICE (default 19: the build is long and runs in the background).
# Idempotent: a finished build (DEST/.built naming the version) is reused unless another
# LLAMA_CPP_PYTHON_VERSION is asked for; delete DEST to rebuild.
# Result: DEST/bin/llama-bench, DEST/convert/convert_hf_to_gguf.py (+ conversion/, gguf-py/), DEST/VERSION.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=$(realpath -m "${1:-bench-results/llama.cpp}")
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=$PWD/.venv/bin/python; else PYTHON=$(command -v python3); fi
fi
jobs=${JOBS:-$(nproc)}
nice_level=${NICE:-19}
mkdir -p "$dest"

wanted=llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION:-}
if [[ -f "$dest/.built" && -x "$dest/bin/llama-bench" && ( -z "${LLAMA_CPP_PYTHON_VERSION:-}" || "$(cat "$dest/.built")" == "$wanted" ) ]]; then
  echo "llama.cpp already built: $(cat "$dest/.built") in $dest" >&2
  exit 0
fi

# 1. The source package (only llama-cpp-python itself from source: its build deps may be wheels).
spec=llama-cpp-python${LLAMA_CPP_PYTHON_VERSION:+==$LLAMA_CPP_PYTHON_VERSION}
pattern="$dest/dl/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION:-*}.tar.gz"
if ! ls $pattern > /dev/null 2>&1; then
  echo "fetching the $spec source package" >&2
  "$PYTHON" -m pip download "$spec" --no-binary llama-cpp-python --no-deps -d "$dest/dl" -q
fi
sdist=$(ls $pattern | sort -V | tail -1)
version=$(basename "$sdist" .tar.gz)
src=$dest/src/$version
if [[ ! -d "$src/vendor/llama.cpp" ]]; then
  rm -rf "$dest/src.tmp" && mkdir -p "$dest/src.tmp"
  tar xzf "$sdist" -C "$dest/src.tmp"
  mkdir -p "$dest/src" && rm -rf "$src" && mv "$dest/src.tmp/$version" "$src" && rm -rf "$dest/src.tmp"
fi
llama=$src/vendor/llama.cpp

# 2. The vendored llama.cpp must know Qwen3.5-MoE, in the converter and in the runtime.
if ! grep -q "Qwen3_5MoeForCausalLM" "$llama"/conversion/*.py "$llama/convert_hf_to_gguf.py" 2> /dev/null; then
  echo "error: $version's converter has no Qwen3_5MoeForCausalLM (qwen35moe); pick a newer LLAMA_CPP_PYTHON_VERSION" >&2
  exit 1
fi
if ! grep -rq '"qwen35moe"' "$llama/src/llama-arch.cpp"; then
  echo "error: $version's llama.cpp has no qwen35moe architecture" >&2
  exit 1
fi

# 3. cmake/ninja: from the system, else pip-installed into the bench virtualenv.
bindir=$(dirname "$PYTHON")
if ! command -v cmake > /dev/null && [[ ! -x "$bindir/cmake" ]]; then
  echo "installing cmake and ninja into $bindir (pip)" >&2
  "$PYTHON" -m pip install -q cmake ninja
fi
export PATH=$bindir:$PATH
generator=()
if command -v ninja > /dev/null; then generator=(-G Ninja); fi

# 4. Configure + build llama-bench only (CPU backend, native flags, no curl/openssl/server).
build=$dest/build/$version
echo "building llama-bench from $version with $jobs jobs (nice $nice_level) in $build" >&2
nice -n "$nice_level" cmake -S "$llama" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF > "$dest/cmake-configure.log" 2>&1 \
  || { tail -30 "$dest/cmake-configure.log" >&2; exit 1; }
nice -n "$nice_level" cmake --build "$build" --target llama-bench -j "$jobs" \
  || { echo "error: llama-bench build failed" >&2; exit 1; }

# 5. Install: the binary and the converter with the packages it imports (conversion/, gguf-py/).
mkdir -p "$dest/bin"
cp "$build/bin/llama-bench" "$dest/bin/llama-bench"
rm -rf "$dest/convert" && mkdir -p "$dest/convert"
cp -r "$llama/convert_hf_to_gguf.py" "$llama/conversion" "$llama/gguf-py" "$dest/convert/"
echo "$version" > "$dest/VERSION"
echo "$version" > "$dest/.built"
echo "built $dest/bin/llama-bench ($version)" >&2
