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
