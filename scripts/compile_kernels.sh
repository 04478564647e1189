#!/usr/bin/env bash
# Compiles every kernels/*.cu for sm_80 and sm_90 (cubin, with ptxas's register and spill report)
# and to PTX for compute_80 and compute_90. Fails on any error or warning; prints one table row
# per kernel and architecture: registers, spill stores/loads, stack, shared memory.
#
#   scripts/compile_kernels.sh [OUT_DIR]          # default target/kernels
#
# nvcc: $RIO_RT_NVCC, else nvcc on PATH, else .venv/cuda-13.0 (scripts/install_cuda_toolchain.sh).
# The flags match rust/rio-cuda/build.rs, which embeds the same PTX and cubins in the extension.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-target/kernels}"
nvcc="${RIO_RT_NVCC:-}"
if [ -z "$nvcc" ]; then
    if command -v nvcc >/dev/null; then nvcc="$(command -v nvcc)"; else nvcc=".venv/cuda-13.0/nvidia/cu13/bin/nvcc"; fi
fi
[ -x "$nvcc" ] || { echo "compile_kernels.sh: no nvcc (set RIO_RT_NVCC or run scripts/install_cuda_toolchain.sh VENV)" >&2; exit 2; }
echo "compile_kernels.sh: $("$nvcc" --version | tail -1)"
mkdir -p "$out"

flags=(-std=c++17 -O3 -lineinfo -Werror all-warnings -Ikernels)
report="$out/ptxas_report.txt"
: >"$report"
failed=0
for cu in kernels/*.cu; do
    name="$(basename "$cu" .cu)"
    for sm in 80 90; do
        log="$out/$name.sm_$sm.log"
        if ! "$nvcc" "${flags[@]}" -arch=sm_$sm -cubin -Xptxas -v,-warn-spills,-warn-lmem-usage -o "$out/$name.sm_$sm.cubin" "$cu" >"$log" 2>&1; then
            echo "FAILED: $cu for sm_$sm"; grep -v "^ptxas info\|bytes stack frame\|^ *$" "$log"; failed=1; continue
        fi
        if grep -qi "warning" "$log"; then
            echo "WARNING treated as error: $cu for sm_$sm"; grep -i "warning" "$log"; failed=1
        fi
        sed "s/^/sm_$sm $name: /" "$log" >>"$report"
        if ! "$nvcc" "${flags[@]}" -arch=compute_$sm -ptx -o "$out/$name.compute_$sm.ptx" "$cu" >"$log.ptx" 2>&1 || grep -qi warning "$log.ptx"; then
            echo "FAILED: $cu to PTX compute_$sm"; cat "$log.ptx"; failed=1
        fi
    done
done

# ptxas -v prints, per entry: "Compiling entry function 'NAME' for 'sm_XX'", then
# "N bytes stack frame, N bytes spill stores, N bytes spill loads", then "Used N registers, ...".
awk '
    /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); fn = substr($0, RSTART + 1, RLENGTH - 2); arch = $1 }
    /bytes stack frame/ { stack = $(NF-11); st = $(NF-7); ld = $(NF-3) }
    /Used [0-9]+ registers/ {
        match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART + 5, RLENGTH - 15)
        smem = 0; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11)
        printf "%-7s %5s %6s %6s %6s %7s  %s\n", arch, regs, stack, st, ld, smem, fn
        if (st + 0 > 0 || ld + 0 > 0) spills++
    }
    END { if (spills) printf "%d kernel(s) spill registers\n", spills }
' "$report" | { printf "%-7s %5s %6s %6s %6s %7s  %s\n" arch regs stack spill_st spill_ld smem kernel; sort -k7 -k1; }

[ "$failed" = 0 ] || { echo "compile_kernels.sh: kernel compilation failed"; exit 1; }
echo "compile_kernels.sh: PTX and cubins in $out"
