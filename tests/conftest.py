"""Shared fixtures: every instruction-set level the CPU offers, a seeded generator."""
from __future__ import annotations

import numpy as np
import pytest

import rio_rt

AVAILABLE_ISAS = rio_rt.cpu_features()["available_isas"]


@pytest.fixture(params=AVAILABLE_ISAS)
def isa(request):
    """Runs the test with the kernels capped at each level this CPU offers, then restores."""
    before = rio_rt.cpu_features()["active_isa"]
    active = rio_rt.set_max_isa(request.param)
    assert active == request.param
    yield active
    rio_rt.set_max_isa(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_qwen35(tmp_path_factory):
    """(folder, transformers fp32 model) of a tiny random text-only Qwen3.5-MoE checkpoint."""
    pytest.importorskip("transformers")
    from tiny_models import build_qwen35
    folder = tmp_path_factory.mktemp("tiny_qwen35")
    return folder, build_qwen35(folder)


@pytest.fixture(scope="session")
def tiny_qwen3moe(tmp_path_factory):
    """(folder, transformers fp32 model) of a tiny random Qwen3-MoE checkpoint."""
    pytest.importorskip("transformers")
    from tiny_models import build_qwen3moe
    folder = tmp_path_factory.mktemp("tiny_qwen3moe")
    return folder, build_qwen3moe(folder)
