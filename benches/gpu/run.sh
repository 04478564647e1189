#!/usr/bin/env bash
# The GPU session in one call: build here, test and benchmark there.
#
# Here (the 2-core machine, Rust + network):
#   benches/gpu/run.sh build
#     installs nvcc 13.0 from PyPI (scripts/install_cuda_toolchain.sh), compiles and checks every
#     kernel (scripts/compile_kernels.sh), builds the abi3 wheel with the PTX and cubins inside,
#     and downloads pytest's wheels for Python 3.12, all into dist/gpu/ (git-ignored).
# There (device tool; python3 3.12, torch, transformers, nvcc 13.0, cuda-bindings, no Rust, no
# network), one `run` call with carry ["dist/gpu"]:
#   benches/gpu/run.sh run
#     installs the wheel with --no-deps into /tmp/rio_site, runs `pytest -m gpu tests` and the toolchain test,
#     the kernel tests again under compute-sanitizer memcheck (when the machine has it), and the
#     GPU benchmarks; logs and JSON go to $OUT (or bench-results/gpu when OUT is unset).
set -euo pipefail
cd "$(dirname "$0")/../.."
dist=dist/gpu

build() {
    local venv="${RIO_RT_VENV:-.venv}"
    eval "$(scripts/install_cuda_toolchain.sh "$venv")"
    scripts/compile_kernels.sh target/kernels
    rm -rf "$dist" && mkdir -p "$dist"
    RIO_RT_NVCC="$RIO_RT_NVCC" "$venv/bin/maturin" build --release -q -o "$dist"
    "$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform any -d "$dist/deps" \
        "pytest==8.4.*" "pluggy==1.6.*" "iniconfig==2.1.*" "packaging>=24"
    ls -la "$dist" "$dist/deps"
    echo "benches/gpu/run.sh: carry dist/gpu and call 'benches/gpu/run.sh run' on the GPU machine"
}

run() {
    local out="${OUT:-bench-results/gpu}"
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1
    local site=/tmp/rio_site
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" --upgrade "$dist"/rio_rt-*.whl
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/rio_test_deps --upgrade "$dist"/deps/*.whl \
        || echo "pytest wheels not installed (the machine's own pytest is used)"
    export PYTHONPATH="$site:/tmp/rio_test_deps${PYTHONPATH:+:$PYTHONPATH}"
    {
        nvidia-smi || true
        python3 -c 'import rio_rt, json; print(json.dumps(rio_rt.cuda.status(), indent=1))' || true
    } 2>&1 | tee "$out/status.txt"

    # -p no:cacheprovider: the wheel is installed read-only elsewhere; keep the tree clean.
    local pytest=(python3 -m pytest -p no:cacheprovider -q -ra)
    set +e
    # Stage limits keep the whole call inside the device tool's 10 minutes per command. Every
    # `gpu` test of the repository, plus the (unmarked) check of the embedded kernels.
    timeout 240 "${pytest[@]}" -m gpu tests 2>&1 | tee "$out/pytest.txt"
    local rc_tests=${PIPESTATUS[0]}
    "${pytest[@]}" tests/test_cuda_toolchain.py 2>&1 | tee -a "$out/pytest.txt"
    [ "${PIPESTATUS[0]}" = 0 ] || rc_tests=1
    local sanitizer
    sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1 || true)"
    if [ -n "$sanitizer" ]; then
        # Memcheck of every kernel launch of the parity tests (each kernel, both GEMM paths).
        timeout 180 "$sanitizer" --tool memcheck --leak-check no --error-exitcode 99 \
            "${pytest[@]}" -x tests/test_cuda_kernels.py tests/test_cuda_decode_kernels.py -k "not dense_gemm" \
            2>&1 | tail -40 | tee "$out/memcheck.txt"
        local rc_memcheck=${PIPESTATUS[0]}
    else
        echo "compute-sanitizer not found on this machine: memcheck skipped" | tee "$out/memcheck.txt"
        local rc_memcheck=0
    fi
    timeout 150 python3 benches/gpu/bench_moe.py --json "$out/bench_moe.json" 2>&1 | tee "$out/bench_moe.txt"
    local rc_bench=${PIPESTATUS[0]}
    set -e
    echo "pytest rc=$rc_tests memcheck rc=$rc_memcheck bench rc=$rc_bench" | tee "$out/summary.txt"
    [ "$rc_tests" = 0 ] && [ "$rc_memcheck" = 0 ] && [ "$rc_bench" = 0 ]
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    *) echo "usage: benches/gpu/run.sh build|run" >&2; exit 2 ;;
esac
