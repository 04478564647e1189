"""rio_rt's version, CPU feature report, instruction-set cap and thread count."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import rio_rt

ISAS = ["scalar", "avx2", "avx512", "avx512_bf16", "amx_bf16"]


def test_version_is_the_workspace_version():
    cargo = (Path(__file__).parents[1] / "Cargo.toml").read_text()
    workspace_version = re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S).group(1)
    assert rio_rt.__version__ == workspace_version
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", rio_rt.__version__)


def test_cpu_features_report_is_consistent():
    info = rio_rt.cpu_features()
    assert set(info) == {"features", "best_isa", "active_isa", "available_isas"}
    available = info["available_isas"]
    assert available == ISAS[: len(available)], "levels are listed weakest first, without gaps"
    assert available[-1] == info["best_isa"] and info["active_isa"] in available
    features = set(info["features"])
    # each level needs its CPU features (the report and the detection must agree)
    if "avx512" in available:
        assert {"avx512f", "avx512bw", "avx512vl"} <= features
    if "avx512_bf16" in available:
        assert "avx512_bf16" in features
    if "amx_bf16" in available:
        assert "amx_bf16" in features
    if os.path.exists("/proc/cpuinfo"):
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
        assert ("avx2" in features) == ("avx2" in flags)
        assert ("avx512f" in features) == ("avx512f" in flags)


def test_set_max_isa_caps_and_restores():
    info = rio_rt.cpu_features()
    try:
        for name in info["available_isas"]:
            assert rio_rt.set_max_isa(name) == name
            assert rio_rt.cpu_features()["active_isa"] == name
        # a cap above what the machine has gives the machine's best
        assert rio_rt.set_max_isa("amx_bf16") == info["best_isa"]
    finally:
        rio_rt.set_max_isa(info["active_isa"])
    with pytest.raises(ValueError, match=r'isa: expected one of scalar, avx2, .*got "sse9"'):
        rio_rt.set_max_isa("sse9")


def test_set_num_threads():
    before = rio_rt.num_threads()
    try:
        rio_rt.set_num_threads(1)
        assert rio_rt.num_threads() == 1
        rio_rt.set_num_threads(0)
        assert rio_rt.num_threads() == len(os.sched_getaffinity(0))
    finally:
        rio_rt.set_num_threads(before)


def test_errors_form_one_hierarchy():
    for file_error in (rio_rt.CheckpointError, rio_rt.ConfigError):
        assert issubclass(file_error, rio_rt.RioError) and issubclass(file_error, ValueError)
        with pytest.raises(rio_rt.RioError, match="bad file"):
            raise file_error("bad file")
    assert issubclass(rio_rt.RioError, Exception) and not issubclass(rio_rt.RioError, ValueError)
