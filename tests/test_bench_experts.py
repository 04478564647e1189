"""`rio-rt bench experts`: its document, its correctness check, its accounting, its native pieces.

No timing is asserted; numbers are checked for consistency with the shape they measured.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from rio_rt import _rio_rt, cli
from rio_rt.bench import check, experts, torch_layer
from rio_rt.bench.shapes import NAMED_SHAPES, MoeShape
from rio_rt.bench.weights import build_layer, random_array, random_inputs, to_float32

HAS_TORCH = torch_layer.available()
TINY = ["--shape", "custom", "--experts", "16", "--top-k", "4", "--hidden", "128", "--intermediate", "64"]
FAST = ["--peak-bytes", str(32 << 20), "--flush-bytes", str(4 << 20), "--peak-seconds", "0.05", "--gemm-size", "128", "--seconds", "0.01", "--repeat", "3"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["bench", "experts", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_document_covers_requested_rows(capsys):
    code, out, err = run_cli(capsys, *TINY, *FAST, "--decode", "1,3", "--prefill", "40", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["bench"] == "experts"
    m = doc["machine"]
    assert m["threads"] >= 1 and m["read_gb_s"] > 0 and m["bf16_gemm_gflop_s"] > 0
    assert m["bf16_gemm_gflop_s"] == max(m["rio_gemm_gflop_s"], m["torch_gemm_gflop_s"] or 0)
    assert len(m["samples"]) == 2  # peaks measured before and after the layers; the best counts
    for key in ("read_gb_s", "rio_gemm_gflop_s"):
        assert m[key] == max(s[key] for s in m["samples"]) and all(s[key] > 0 for s in m["samples"])
    systems = {"rio_rt"} | ({"torch_grouped_mm", "torch_eager"} if HAS_TORCH else set())
    got = {(r["system"], r["phase"], r["tokens"]) for r in doc["rows"]}
    want = {(s, p, t) for s in systems for p, t in [("decode", 1), ("decode", 3), ("prefill", 40)]}
    assert got == want
    assert all(c["ok"] for c in doc["checks"]) and len(doc["checks"]) == 1 + 2 * HAS_TORCH

    # Every rate follows from the median time and the shape, counted here independently.
    e, k, h, i = 16, 4, 128, 64
    for r in doc["rows"]:
        seconds = r["ms"] / 1e3
        assert r["tok_s"] == pytest.approx(r["tokens"] / seconds, rel=1e-9)
        flops = 2 * r["tokens"] * (k * 3 * h * i + 3 * h * i + e * h + h)
        assert r["gflop_s"] == pytest.approx(flops / seconds / 1e9, rel=1e-9)
        assert min(r["tokens"] * k, e) >= r["unique_experts"] >= k
        weight_bytes = 2 * (r["unique_experts"] * 3 * h * i + e * h + 3 * h * i + h)
        assert r["gb_s"] == pytest.approx(weight_bytes / seconds / 1e9, rel=1e-9)
        if r["phase"] == "decode":
            assert r["pct_of_floor"] == pytest.approx(100 * r["gb_s"] / m["read_gb_s"])
        else:
            assert r["pct_of_peak"] == pytest.approx(100 * r["gflop_s"] / m["bf16_gemm_gflop_s"])
        assert 1 <= r["runs"] <= 3
    assert "decode" in err  # the progress bar went to stderr


def test_table_and_no_torch_without_shared_expert(capsys):
    code, out, _ = run_cli(capsys, *TINY, *FAST, "--decode", "2", "--no-prefill", "--no-torch", "--no-shared-expert", "--dtype", "f32", "--no-flush")
    assert code == 0
    assert "caches not flushed" in out and "no shared" in out and "% of read BW" in out and "torch_eager" not in out
    assert "check rio_rt vs numpy float64" in out and "MISMATCH" not in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experts", "8"], "only with --shape custom"),
        (["--shape", "custom", "--experts", "8"], "needs --top-k"),
        (TINY[:5] + ["20", "--hidden", "8", "--intermediate", "8"], "top_k"),
        (["--decode", "1,x"], "comma-separated"),
        (["--decode", "0"], "positive"),
        (["--no-decode", "--no-prefill"], "nothing to run"),
    ],
)
def test_bad_arguments_are_named(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "experts", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_wrong_rio_output_fails_the_command(capsys, monkeypatch):
    real = experts._rio_layer

    class Wrong:
        """rio's layer with every output value 5% too large."""

        def __init__(self, w, top_k):
            self.inner = real(w, top_k)

        def forward(self, x, out):
            self.inner.forward(x, out)
            out *= 1.05

    monkeypatch.setattr(experts, "_rio_layer", Wrong)
    code, _, err = run_cli(capsys, *TINY, *FAST, "--decode", "1", "--no-prefill")
    assert code == 3 and "MISMATCH" in err


@pytest.fixture(scope="module")
def tiny_layer():
    shape = MoeShape("tiny", experts=12, top_k=3, hidden=96, intermediate=48, shared_intermediate=32)
    w = build_layer(shape, "bf16", seed=5)
    x = random_inputs(np.random.default_rng(6), 1, 40, shape.hidden, "bf16")[0]
    layer = experts._rio_layer(w, shape.top_k)
    out = np.empty((40, shape.hidden), dtype=np.float32)
    layer.forward(x, out)
    return shape, w, x, out


def test_comparison_catches_perturbed_outputs(tiny_layer):
    shape, w, x, out = tiny_layer
    want = check.reference_forward(x, w, shape.top_k)
    ties = check.near_ties(check.router_logits(x, w), shape.top_k, "bf16")
    tol = check.TOLERANCE["bf16"]
    assert check.compare(out, want, ties, tol, "rio_rt", "ref").ok
    token = int(np.flatnonzero(~ties)[0])
    for name, bad in [
        ("one token 5% off", lambda o: o.__setitem__(token, o[token] * 1.05)),
        ("one element NaN", lambda o: o.__setitem__((token, 3), np.nan)),
        ("two tokens swapped", lambda o: o.__setitem__([token, token + 1], o[[token + 1, token]])),
        ("shared expert missing", lambda o: o.__isub__(check.reference_forward(x, w, shape.top_k) - _routed_only(x, w, shape))),
    ]:
        wrong = out.copy()
        bad(wrong)
        assert not check.compare(wrong, want, ties, tol, "rio_rt", "ref").ok, name


def _routed_only(x, w, shape):
    from dataclasses import replace

    return check.reference_forward(x, replace(w, shared_gate=None, shared_up=None, shared_down=None, shared_expert_gate=None), shape.top_k)


def test_near_ties_and_the_half_rule():
    logits = np.array([[3.0, 1.0, 1.0 + 2**-9, -1.0], [3.0, 2.0, 1.0, 0.0]])
    assert check.near_ties(logits, 2, "bf16").tolist() == [True, False]
    assert check.near_ties(logits, 2, "f32").tolist() == [False, False]
    assert not check.near_ties(logits, 4, "bf16").any()
    want = np.ones((4, 8))
    # Identical outputs, but only 1 of 4 tokens comparable: not a pass.
    assert not check.compare(want, want, np.array([True, True, True, False]), 1e-3, "a", "b").ok
    assert check.compare(want, want, np.array([True, True, False, False]), 1e-3, "a", "b").ok


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch and transformers")
@pytest.mark.parametrize("shared", [24, 0])
def test_float64_reference_matches_transformers_block(shared):
    """The check's own reference against transformers' block, in float32 (both expert paths)."""
    shape = MoeShape("t", experts=10, top_k=4, hidden=64, intermediate=32, shared_intermediate=shared)
    w = build_layer(shape, "f32", seed=9)
    x = random_inputs(np.random.default_rng(3), 1, 30, shape.hidden, "f32")[0]
    want = check.reference_forward(x, w, shape.top_k)
    ties = check.near_ties(check.router_logits(x, w), shape.top_k, "f32")
    for impl in torch_layer.IMPLEMENTATIONS.values():
        got = torch_layer.TorchMoe(w, shape.top_k, impl)(x).numpy()
        result = check.compare(got, want, ties, 1e-5, impl, "ref")
        assert result.ok and result.compared == 30, result.summary()


def test_spec_bytes_per_token_for_397b():
    """Spec section 7: per layer and token, routed experts + router + shared expert and gate (bf16)."""
    s = NAMED_SHAPES["qwen3.5-397b"]
    params_60_layers = 7_549_747_200 + 125_829_120 + 755_220_480
    assert s.weight_bytes(s.top_k, "bf16") * 60 == 2 * params_60_layers
    assert NAMED_SHAPES["qwen3.5-35b"] == MoeShape("qwen3.5-35b", 256, 8, 2048, 512, 512)


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
def test_random_weights_have_the_requested_scale(dtype):
    a = random_array(np.random.default_rng(0), (300, 200), dtype, 0.05)
    v = to_float32(a, dtype).astype(np.float64)
    assert np.all(v != 0) and np.all(np.isfinite(v))
    assert 0.05 / 2**0.5 <= np.sqrt(np.mean(v**2)) <= 0.05 * 2**0.5
    assert abs(np.mean(v)) < 0.05 * 0.02  # symmetric signs: the mean is ~1/sqrt(60000) of the RMS


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_bf16_bits_decode_like_torch():
    import torch

    a = random_array(np.random.default_rng(1), (1000,), "bf16", 3.0)
    assert np.array_equal(to_float32(a, "bf16"), torch.from_numpy(a).view(torch.bfloat16).float().numpy())
    assert torch_layer.as_tensor(a, "bf16").data_ptr() == a.ctypes.data  # a view, not a copy


def test_peaks_are_positive_and_sane():
    gb_s = _rio_rt.measure_read_bandwidth(64 << 20, 0.05)
    assert 0.1 < gb_s < 10_000
    gflops = _rio_rt.measure_gemm_peak(96, 200, 64, 0.02)
    assert 0.01 < gflops < 1_000_000


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: _rio_rt.measure_read_bandwidth(0, 1.0), "bytes"),
        (lambda: _rio_rt.measure_read_bandwidth(-5, 1.0), "bytes"),
        (lambda: _rio_rt.measure_read_bandwidth(1 << 20, -1.0), "seconds"),
        (lambda: _rio_rt.measure_read_bandwidth(1 << 20, float("nan")), "seconds"),
        (lambda: _rio_rt.measure_read_bandwidth(1 << 62, 1.0), "bytes"),
        (lambda: _rio_rt.measure_gemm_peak(0, 8, 8, 1.0), "m"),
        (lambda: _rio_rt.measure_gemm_peak(8, -1, 8, 1.0), "n"),
        (lambda: _rio_rt.measure_gemm_peak(8, 8, 8, 0.0), "seconds"),
        (lambda: _rio_rt.measure_gemm_peak(1 << 40, 1 << 40, 8, 1.0), "m, n, k"),
    ],
)
def test_peaks_reject_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=f"^{arg}"):
        call()


def test_layer_bench_rejects_bad_input(tiny_layer):
    shape, w, x, _ = tiny_layer
    make = _rio_rt.MoeLayerBench
    with pytest.raises(TypeError, match="gate_up_proj: expected dtype bfloat16"):
        make(w.router, w.gate_up.astype(np.float32), w.down, 3, "bf16")
    with pytest.raises(TypeError, match="router_weight: expected a numpy array"):
        make([1, 2], w.gate_up, w.down, 3, "bf16")
    with pytest.raises(ValueError, match="top_k"):
        make(w.router, w.gate_up, w.down, 13, "bf16")
    with pytest.raises(ValueError, match="down_proj"):
        make(w.router, w.gate_up, w.down[:, :, :-1], 3, "bf16")
    with pytest.raises(ValueError, match="give all three or none"):
        make(w.router, w.gate_up, w.down, 3, "bf16", w.shared_gate)
    with pytest.raises(ValueError, match="dtype"):
        make(w.router, w.gate_up, w.down, 3, "int8")
    with pytest.raises(ValueError, match="gate_up_proj: must be C-contiguous"):
        make(w.router, w.gate_up[:, ::-1], w.down, 3, "bf16")
    layer = make(w.router, w.gate_up, w.down, 3, "bf16")
    out = np.empty((40, shape.hidden), dtype=np.float32)
    with pytest.raises(ValueError, match="x"):
        layer.forward(x[::-1], out)
    with pytest.raises(ValueError, match="x"):
        layer.forward(np.repeat(x, 2, axis=1)[:, ::2], out)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="out: the array is read-only"):
        layer.forward(x, out)
    with pytest.raises(ValueError, match="x"):
        layer.forward(x[:, :-1], np.empty((40, shape.hidden - 1), dtype=np.float32))
    with pytest.raises(ValueError, match="xs"):
        layer.time_forward(x, np.empty((40, shape.hidden), dtype=np.float32), 0.1, 1)


def test_layer_bench_keeps_its_weights_alive(tiny_layer):
    """The layer reads the arrays in place; dropping every Python reference must not free them."""
    import gc

    shape, w, x, out = tiny_layer
    arrays = [a.copy() for a in (w.router, w.gate_up, w.down, w.shared_gate, w.shared_up, w.shared_down, w.shared_expert_gate)]
    layer = _rio_rt.MoeLayerBench(*arrays[:3], shape.top_k, "bf16", *arrays[3:])
    del arrays
    gc.collect()
    reuse = [np.full(a.shape, 0x7FC0, dtype=np.uint16) for a in (w.gate_up, w.down)]  # NaN bits, if memory were reused
    got = np.empty_like(out)
    layer.forward(x, got)
    np.testing.assert_array_equal(got, out)
    del reuse


def test_uint16_is_bf16_only_where_the_bench_asks(tiny_layer):
    """uint16 carries bf16 bits into the bench's bf16 layer; f16/f32 layers and the ops refuse it."""
    shape, w, x, _ = tiny_layer
    f32 = [w.router, w.gate_up, w.down]
    f32 = [(a.astype(np.uint32) << 16).view(np.float32) for a in f32]
    layer = _rio_rt.MoeLayerBench(*f32, shape.top_k, "f32")
    with pytest.raises(TypeError, match="x: expected dtype float32, got uint16"):
        layer.forward(x, np.empty((40, shape.hidden), dtype=np.float32))
    with pytest.raises(TypeError, match="router_weight: expected dtype float16, got uint16"):
        _rio_rt.MoeLayerBench(w.router, w.gate_up, w.down, shape.top_k, "f16")
    with pytest.raises(TypeError, match="gate_up_proj: expected dtype bfloat16 .*uint16.*, got int16"):
        _rio_rt.MoeLayerBench(w.router, w.gate_up.view(np.int16), w.down, shape.top_k, "bf16")
    with pytest.raises(TypeError, match="x: expected dtype .*, got uint16"):
        _rio_rt.moe_router(x, f32[0], shape.top_k)


def test_layer_bench_times_every_input_it_needs(tiny_layer):
    shape, w, x, out = tiny_layer
    layer = experts._rio_layer(w, shape.top_k)
    xs = np.stack([x, x, x, x])
    got = np.empty_like(out)
    times = layer.time_forward(xs, got, 0.0, 2)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert len(layer.time_forward(xs, got, 1e9, 1)) == 4
    np.testing.assert_array_equal(got, out)  # same input, same result


@pytest.mark.skipif(not __import__("importlib").util.find_spec("matplotlib"), reason="needs matplotlib")
def test_plot_is_written(tmp_path, capsys):
    path = tmp_path / "experts.png"
    code, _, _ = run_cli(capsys, *TINY, *FAST, "--decode", "1", "--prefill", "16", "--no-torch", "--plot", str(path))
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FakeArray:
    """An object whose `__array_interface__` is whatever a test says."""

    def __init__(self, iface):
        self.__array_interface__ = iface


@pytest.mark.parametrize(
    "iface, error",
    [
        ({}, TypeError),
        ({"typestr": "<u2", "shape": (4, 4)}, TypeError),
        ({"typestr": 7, "shape": (4, 4), "data": (64, False)}, TypeError),
        ({"typestr": "<f4", "shape": (4, 4), "data": (64, False)}, TypeError),
        ({"typestr": "<u2", "shape": "4x4", "data": (64, False)}, TypeError),
        ({"typestr": "<u2", "shape": (4, 4), "data": "nowhere"}, TypeError),
        ({"typestr": "<u2", "shape": (4, 4), "data": (0, False)}, ValueError),
        ({"typestr": "<u2", "shape": (4, 4), "data": (65, False)}, ValueError),
        ({"typestr": "<u2", "shape": (4, 4), "data": (64, False), "strides": (9, 2)}, ValueError),
        ({"typestr": "", "shape": (4, 4), "data": (64, False)}, TypeError),
        (None, TypeError),
    ],
)
def test_malformed_array_interfaces_are_rejected(tiny_layer, iface, error):
    _, w, _, _ = tiny_layer
    with pytest.raises(error, match="router_weight"):
        _rio_rt.MoeLayerBench(FakeArray(iface), w.gate_up, w.down, 3, "bf16")


def test_a_layer_too_big_for_memory_is_refused_before_building(capsys, monkeypatch):
    from rio_rt.bench import memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1 << 20)
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "experts", *TINY, *FAST])
    assert exc.value.code == 2
    assert "--shape custom: needs" in capsys.readouterr().err
