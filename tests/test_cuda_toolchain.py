"""The CUDA build, checked on any machine: the extension embeds PTX and cubins for sm_80 and sm_90
when nvcc was found at build time, and without a GPU the backend says why instead of failing."""
from __future__ import annotations

import pytest

import rio_rt
from rio_rt import cuda

KERNEL_FILES = {"moe_route", "moe_dispatch", "moe_gemm", "moe_combine", "norm_rope", "attention_decode", "gated_delta", "sampling", "soft_embedding"}
# One entry point per kernel family the MoE backend launches; each must be in the PTX of its file.
ENTRY_POINTS = {
    "moe_route": ["moe_topk_softmax"],
    "moe_dispatch": ["moe_count", "moe_offsets", "moe_scatter"],
    "moe_gemm": ["moe_gemm_tc_bf16_swiglu", "moe_gemm_tc_f16_f32", "moe_gemm_rows_bf16_swiglu", "moe_gemm_rows_f32_f32"],
    "moe_combine": ["moe_combine_bf16", "moe_combine_f16", "moe_combine_f32"],
    "norm_rope": ["rmsnorm_one_plus_w_bf16", "rope_partial_bf16"],
    "attention_decode": ["attention_decode_bf16", "attention_decode_f32"],
    "gated_delta": ["gdn_conv_update_bf16", "gdn_recurrent_step_bf16"],
    "sampling": ["argmax_rows_f32", "topk_chunks_f32", "sample_topk_finish"],
    "soft_embedding": ["soft_row_stats_f32", "soft_mix_full_f32_bf16", "soft_topk_finish_bf16"],
}


def test_status_is_well_formed_and_explains_unavailability():
    s = cuda.status()
    assert set(s) >= {"available", "reason", "nvcc", "kernel_modules", "driver_version", "devices", "cublas"}
    assert rio_rt.cuda_is_available() is s["available"]
    if s["available"]:
        assert s["reason"] == ""
        assert s["devices"] and s["devices"][0]["compute_capability"][0] >= 8
    else:
        assert s["reason"], "an unavailable CUDA backend must say why"


def test_kernels_are_embedded_for_both_architectures():
    s = cuda.status()
    if s["nvcc"] is None:
        pytest.skip("extension built without nvcc (scripts/install_cuda_toolchain.sh .venv, then rebuild)")
    assert "13.0" in s["nvcc"], f"kernels must come from nvcc 13.0 (the GPU driver rejects newer PTX), got {s['nvcc']}"
    images = cuda.kernel_images()
    assert set(images) >= KERNEL_FILES
    for name, entries in ENTRY_POINTS.items():
        img = images[name]
        for arch in ("80", "90"):
            ptx = img[f"ptx_{arch}"].decode()
            assert f".target sm_{arch}" in ptx, f"{name}: PTX for compute_{arch} missing"
            assert ".version 9.0" in ptx, f"{name}: PTX ISA must be 9.0 (CUDA 13.0) for the 13.0 driver"
            for entry in entries:
                assert f".entry {entry}(" in ptx, f"{name}: kernel {entry} missing from compute_{arch} PTX"
            cubin = img[f"cubin_{arch}"]
            assert cubin[:4] == b"\x7fELF", f"{name}: sm_{arch} cubin is not an ELF image"


def test_operations_refuse_cleanly_without_a_gpu():
    if cuda.cuda_is_available():
        pytest.skip("a GPU is present; tests/test_cuda_kernels.py covers it")
    torch = pytest.importorskip("torch")
    x = torch.zeros(2, 8)
    with pytest.raises(RuntimeError, match="no CUDA GPU: "):
        cuda.moe_forward(x, torch.zeros(4, 8), torch.zeros(4, 6, 8), torch.zeros(4, 8, 3), top_k=2)
