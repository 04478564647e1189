#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler from PyPI (no system CUDA needed) into VENV/cuda-13.0 and prints
# the variables that point the build at it.
#
#   scripts/install_cuda_toolchain.sh VENV        # e.g. .venv
#   eval "$(scripts/install_cuda_toolchain.sh .venv)"   # exports RIO_RT_NVCC and CUDA_HOME
#
# The wheels are pinned to 13.0.x: the GPU machines' driver is 13.0 and rejects PTX from a newer
# compiler. They go into their own --target folder, not the venv's site-packages, so they never
# replace the newer CUDA runtime torch depends on. nvcc, crt headers, cicc (nvvm) and the CCCL
# headers all land in VENV/cuda-13.0/nvidia/cu13/{bin,include,nvvm}; the nvcc.profile shipped in
# that bin folder finds them relative to itself, so no extra -I or --nvvm-path flags are needed.
# Progress goes to stderr; stdout carries only the export lines.
set -euo pipefail

venv="${1:?usage: install_cuda_toolchain.sh VENV}"
python="$venv/bin/python"
[ -x "$python" ] || { echo "install_cuda_toolchain.sh: $python not found (make the virtualenv first)" >&2; exit 2; }

prefix="$(cd "$venv" && pwd)/cuda-13.0"
root="$prefix/nvidia/cu13"
wanted="13.0"

if [ -x "$root/bin/nvcc" ] && "$root/bin/nvcc" --version | grep -q "release $wanted"; then
    echo "install_cuda_toolchain.sh: nvcc $wanted already in $root" >&2
else
    echo "install_cuda_toolchain.sh: installing nvcc $wanted into $prefix" >&2
    "$python" -m pip install -q --disable-pip-version-check --no-deps --upgrade --target "$prefix" \
        "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
        "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-runtime==13.0.*" >&2
fi

# A compile of an empty kernel proves nvcc finds its crt headers, cicc and ptxas.
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
printf '#include <cuda_bf16.h>\nextern "C" __global__ void probe(float *o) { o[0] = __bfloat162float(__float2bfloat16(1.f)); }\n' >"$probe/probe.cu"
"$root/bin/nvcc" -arch=sm_80 -cubin -o "$probe/probe.cubin" "$probe/probe.cu" >&2
echo "install_cuda_toolchain.sh: $("$root/bin/nvcc" --version | tail -1) works" >&2

echo "export RIO_RT_NVCC=$root/bin/nvcc"
echo "export CUDA_HOME=$root"
