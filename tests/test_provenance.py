"""rio_rt.provenance.fit against numpy float64 least squares on the same stored values.

Tolerances: coefficients, residuals, R² and cosines agree with ``np.linalg.lstsq`` in float64 to
1e-6 (the fit solves the normal equations, whose residual cancels near 1e-8 relative); exact blends
recover their coefficients within 1e-3 whatever the storage dtype.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from checkpoints import BF16, cast, random_model, write_checkpoint
from rio_rt import provenance


def blend(parts, coefs, const=0.0):
    return {k: sum(c * p[k] for c, p in zip(coefs, parts)) + const for k in parts[0]}


def lstsq_reference(cand, parents, intercept):
    """Per tensor: coefficients, intercept, relative residual, R², cosines, from float64 numpy."""
    out = {}
    for name, y in cand.items():
        y = np.asarray(y, np.float64).ravel()
        cols = [np.asarray(p[name], np.float64).ravel() for p in parents]
        x = np.stack(cols + ([np.ones_like(y)] if intercept else []), axis=1)
        sol, *_ = np.linalg.lstsq(x, y, rcond=None)
        r = y - x @ sol
        out[name] = {
            "coefficients": sol[: len(parents)],
            "intercept": sol[len(parents)] if intercept else None,
            "rel_residual": np.linalg.norm(r) / np.linalg.norm(y),
            "r2": 1 - (r @ r) / np.sum((y - y.mean()) ** 2),
            "cosines": [c @ y / np.linalg.norm(c) / np.linalg.norm(y) for c in cols],
        }
    return out


def check_against_reference(result, cand, parents, intercept=False, tol=1e-6):
    ref = lstsq_reference(cand, parents, intercept)
    assert {t.name for t in result.tensors} == set(ref)
    for t in result.tensors:
        want = ref[t.name]
        np.testing.assert_allclose(t.coefficients, want["coefficients"], atol=tol, err_msg=t.name)
        if intercept:
            assert t.intercept == pytest.approx(want["intercept"], abs=tol), t.name
        assert t.rel_residual == pytest.approx(want["rel_residual"], abs=tol), t.name
        assert t.r2 == pytest.approx(want["r2"], abs=tol), t.name
        np.testing.assert_allclose(t.cosines, want["cosines"], atol=tol / 100, err_msg=t.name)


@pytest.fixture
def parents(tmp_path, rng):
    """Two unrelated parents, float32, written in different layouts and prefixes."""
    a = cast(random_model(rng), np.float32)
    b = cast(random_model(rng), np.float32)
    write_checkpoint(tmp_path / "a", a)
    write_checkpoint(tmp_path / "b", b, prefix="model.", layout="per_expert", shards=3)
    return a, b, [tmp_path / "a", tmp_path / "b"]


def test_exact_blend_recovers_coefficients_and_verdict(tmp_path, parents):
    a, b, paths = parents
    cand = cast(blend([a, b], [0.6, 0.4]), np.float32)
    write_checkpoint(tmp_path / "c", cand)
    r = provenance.fit(tmp_path / "c", paths)
    check_against_reference(r, cand, [a, b])
    for t in r.tensors:
        np.testing.assert_allclose(t.coefficients, [0.6, 0.4], atol=1e-3, err_msg=t.name)
        assert t.explained and not t.outlier
    assert r.verdict.kind == "blend"
    np.testing.assert_allclose(r.verdict.coefficients, [0.6, 0.4], atol=1e-3)
    assert r.overall.share_explained == 1.0
    assert r.overall.params == sum(v.size for v in cand.values())
    assert "0.600 ×" in r.verdict.text and "0.400 ×" in r.verdict.text


@pytest.mark.parametrize("intercept", [False, True])
def test_three_parent_blend_in_mixed_dtypes_matches_numpy(tmp_path, rng, intercept):
    ps = [cast(random_model(rng), dt) for dt in (BF16, np.float16, np.float32)]
    for i, p in enumerate(ps):
        write_checkpoint(tmp_path / f"p{i}", p, layout=("fused", "per_expert")[i % 2], shards=1 + i)
    cand = cast(blend(ps, [0.5, 0.3, 0.2], const=0.01 if intercept else 0.0), BF16)
    write_checkpoint(tmp_path / "c", cand, layout="per_expert")
    r = provenance.fit(tmp_path / "c", [tmp_path / f"p{i}" for i in range(3)], intercept=intercept)
    check_against_reference(r, cand, ps, intercept)
    assert r.verdict.kind == "blend", r.verdict.text
    np.testing.assert_allclose(r.verdict.coefficients, [0.5, 0.3, 0.2], atol=1e-3)
    # bf16 rounding of the blend leaves a relative residual of about 2^-9.
    assert 1e-4 < r.overall.rel_residual_mean < 5e-3


@pytest.mark.parametrize("experts", [4, 256])
def test_all_bf16_blend_matches_numpy(tmp_path, rng, experts):
    """All operands bf16. Tensors of 2^20 elements or more (experts=256) take the kernel that sums
    runs of exact products in f32: agreement with numpy is then 1e-5 rather than 1e-6, still far
    below the 2e-3 bf16 rounding of the blend."""
    size = {"experts": experts, "hidden": 64, "inter": 32} if experts == 256 else {"experts": experts}
    a, b = (cast(random_model(rng, **size), BF16) for _ in range(2))
    write_checkpoint(tmp_path / "a", a, layout="per_expert")
    write_checkpoint(tmp_path / "b", b, shards=2)
    cand = cast(blend([a, b], [0.55, 0.45]), BF16)
    write_checkpoint(tmp_path / "c", cand)
    r = provenance.fit(tmp_path / "c", [tmp_path / "a", tmp_path / "b"])
    check_against_reference(r, cand, [a, b], tol=1e-5 if experts == 256 else 1e-6)
    assert r.verdict.kind == "blend", r.verdict.text
    np.testing.assert_allclose(r.verdict.coefficients, [0.55, 0.45], atol=1e-3)
    assert (max(t.params for t in r.tensors) >= 1 << 20) == (experts == 256)


def test_blend_plus_noise(tmp_path, parents, rng):
    a, b, paths = parents
    for noise, kind in [(0.002, "blend"), (0.3, "fine_tuned")]:
        cand = blend([a, b], [0.7, 0.3])
        cand = cast({k: v + noise * np.std(v) * rng.standard_normal(v.shape) for k, v in cand.items()}, np.float32)
        write_checkpoint(tmp_path / f"n{noise}", cand)
        r = provenance.fit(tmp_path / f"n{noise}", paths)
        check_against_reference(r, cand, [a, b])
        assert r.verdict.kind == kind, r.verdict.text
        np.testing.assert_allclose(r.overall.coefficient_mean, [0.7, 0.3], atol=0.03)
        np.testing.assert_allclose(r.verdict.coefficients, [0.7, 0.3], atol=0.03)


def test_fine_tune_of_one_parent(tmp_path, parents, rng):
    a, b, paths = parents
    cand = cast({k: v + 0.1 * np.std(v) * rng.standard_normal(v.shape) for k, v in b.items()}, np.float32)
    write_checkpoint(tmp_path / "ft", cand)
    r = provenance.fit(tmp_path / "ft", paths)
    check_against_reference(r, cand, [a, b])
    assert (r.verdict.kind, r.verdict.parent) == ("fine_tuned", 1), r.verdict.text
    np.testing.assert_allclose(r.overall.coefficient_mean, [0.0, 1.0], atol=0.05)
    assert r.overall.share_explained == 0.0
    assert all(t.outlier for t in r.tensors)


def test_unrelated_model(tmp_path, parents, rng):
    a, b, paths = parents
    cand = cast(random_model(rng), np.float32)
    write_checkpoint(tmp_path / "u", cand)
    r = provenance.fit(tmp_path / "u", paths)
    check_against_reference(r, cand, [a, b])
    assert r.verdict.kind == "unrelated", r.verdict.text
    assert abs(r.overall.cosine_mean[0]) < 0.2 and abs(r.overall.cosine_mean[1]) < 0.2


def test_identical_copy_in_another_layout_and_prefix(tmp_path, parents):
    a, b, paths = parents
    write_checkpoint(tmp_path / "copy", b, layout="fused", shards=2)
    r = provenance.fit(tmp_path / "copy", paths)
    assert (r.verdict.kind, r.verdict.parent) == ("identical", 1), r.verdict.text
    for t in r.tensors:
        assert t.rel_distances[1] == 0.0, t.name
        np.testing.assert_allclose(t.coefficients, [0.0, 1.0], atol=1e-6)


def test_layout_prefix_and_sharding_do_not_change_the_fit(tmp_path, parents):
    a, b, paths = parents
    cand = cast(blend([a, b], [0.25, 0.75]), np.float32)
    write_checkpoint(tmp_path / "f", cand)
    write_checkpoint(tmp_path / "p", cand, prefix="model.", layout="per_expert", shards=4)
    rf = provenance.fit(tmp_path / "f", paths)
    rp = provenance.fit(tmp_path / "p", paths)
    assert [t.name for t in rf.tensors] == [t.name for t in rp.tensors]
    for x, y in zip(rf.tensors, rp.tensors):
        assert x.shape == y.shape
        np.testing.assert_allclose(x.coefficients, y.coefficients, rtol=0, atol=1e-12)


def test_quick_mode_samples_a_seeded_subset(tmp_path, rng):
    big = lambda: {"layers.0.mlp.experts.gate_up_proj": rng.standard_normal((8, 64, 512)), "norm.weight": rng.standard_normal(64)}
    a, b = cast(big(), np.float32), cast(big(), np.float32)
    write_checkpoint(tmp_path / "a", a)
    write_checkpoint(tmp_path / "b", b)
    cand = {k: 0.6 * a[k] + 0.4 * b[k] + 0.05 * rng.standard_normal(a[k].shape) for k in a}
    cand = cast(cand, np.float32)
    write_checkpoint(tmp_path / "c", cand)
    paths = [tmp_path / "a", tmp_path / "b"]
    q1 = provenance.fit(tmp_path / "c", paths, quick=True, sample=4096, seed=1)
    q1_again = provenance.fit(tmp_path / "c", paths, quick=True, sample=4096, seed=1)
    q2 = provenance.fit(tmp_path / "c", paths, quick=True, sample=4096, seed=2)
    full = provenance.fit(tmp_path / "c", paths)
    experts = lambda r: next(t for t in r.tensors if "experts" in t.name)
    assert q1.mode == "quick" and full.mode == "full"
    assert experts(q1).elements == 4096 and experts(full).elements == 8 * 64 * 512
    assert next(t for t in q1.tensors if t.name == "norm.weight").elements == 64  # small: read whole
    assert experts(q1).coefficients == experts(q1_again).coefficients
    assert experts(q1).coefficients != experts(q2).coefficients
    np.testing.assert_allclose(experts(q1).coefficients, [0.6, 0.4], atol=0.02)
    assert q1.bytes_read < full.bytes_read / 10


def test_missing_tensors_are_reported_and_other_towers_skipped(tmp_path, parents):
    a, b, paths = parents
    cand = cast(blend([a, b], [0.5, 0.5]), np.float32)
    del cand["lm_head.weight"]
    cand["extra.weight"] = np.ones(4, np.float32)
    extra = {"model.visual.blocks.0.weight": np.ones(3, np.float32), "mtp.fc.weight": np.ones(3, np.float32)}
    write_checkpoint(tmp_path / "c", cand, extra=extra)
    r = provenance.fit(tmp_path / "c", paths)
    reasons = {n.name: n.reason for n in r.not_compared}
    assert sorted(n.name for n in r.not_compared) == ["extra.weight", "lm_head.weight"]
    assert reasons["extra.weight"] == f"missing in {paths[0]}, {paths[1]}"
    assert reasons["lm_head.weight"] == f"missing in the candidate (present in {paths[0]}, {paths[1]})"
    assert r.verdict.kind == "blend"


def test_non_finite_tensors_are_reported(tmp_path, parents):
    a, b, paths = parents
    cand = cast(blend([a, b], [0.5, 0.5]), np.float32)
    cand["norm.weight"][3] = np.nan
    cand["layers.0.mlp.gate.weight"][0, 0] = np.inf
    write_checkpoint(tmp_path / "c", cand)
    r = provenance.fit(tmp_path / "c", paths)
    bad = {n.name: n.reason for n in r.not_compared}
    assert bad == {"norm.weight": "holds NaN or infinite values", "layers.0.mlp.gate.weight": "holds NaN or infinite values"}
    assert r.verdict.kind == "blend" and len(r.tensors) == len(cand) - 2
    assert "verdict:" in r.table()


def test_summaries_are_parameter_weighted(tmp_path, parents, rng):
    a, b, paths = parents
    # Each tensor gets its own coefficients, so the means depend on the weighting.
    coefs = {k: (rng.uniform(0, 1), rng.uniform(0, 1)) for k in a}
    cand = cast({k: coefs[k][0] * a[k] + coefs[k][1] * b[k] for k in a}, np.float32)
    write_checkpoint(tmp_path / "c", cand)
    r = provenance.fit(tmp_path / "c", paths)
    for group in r.layers + [r.overall]:
        rows = [t for t in r.tensors if group.name == "overall" or t.layer == group.layer]
        w = np.array([t.params for t in rows], float)
        c = np.array([t.coefficients for t in rows])
        np.testing.assert_allclose(group.coefficient_mean, w @ c / w.sum(), atol=1e-12)
        np.testing.assert_allclose(group.coefficient_std, np.sqrt(w @ (c - w @ c / w.sum()) ** 2 / w.sum()), atol=1e-12)
        assert group.params == w.sum() and group.tensors == len(rows)
    assert [s.name for s in r.layers] == ["layer 0", "layer 1", "other"]
    assert set(r.overall.outliers) == {t.name for t in r.tensors if t.outlier}
    assert all(t.outlier for t in r.tensors if np.max(np.abs(np.array(t.coefficients) - r.overall.coefficient_mean)) > 0.05)


def test_progress_callback_and_its_exceptions(tmp_path, parents):
    a, b, paths = parents
    write_checkpoint(tmp_path / "c", cast(blend([a, b], [0.5, 0.5]), np.float32))
    calls = []
    r = provenance.fit(tmp_path / "c", paths, progress=lambda *args: calls.append(args))
    assert len(calls) == len(r.tensors) + 1
    assert [c[0] for c in calls] == list(range(len(r.tensors) + 1))
    assert calls[-1][3] == calls[-1][4] == r.bytes_read
    assert all(x[3] <= y[3] for x, y in zip(calls, calls[1:]))

    def stop(done, *_):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        provenance.fit(tmp_path / "c", paths, progress=stop)


def test_result_round_trips_through_json(tmp_path, parents):
    a, b, paths = parents
    write_checkpoint(tmp_path / "c", cast(blend([a, b], [0.5, 0.5]), np.float32))
    r = provenance.fit(tmp_path / "c", paths, intercept=True)
    d = json.loads(json.dumps(r.to_dict()))
    assert provenance.ProvenanceResult.from_dict(d) == r
    assert d["verdict"]["kind"] == "blend" and d["thresholds"]["explained"] == 0.01


def test_thresholds_change_the_verdict(tmp_path, parents):
    a, b, paths = parents
    write_checkpoint(tmp_path / "c", cast(blend([a, b], [0.9, 0.1]), np.float32))
    assert provenance.fit(tmp_path / "c", paths).verdict.kind == "blend"
    strict = provenance.fit(tmp_path / "c", paths, thresholds={"material_coefficient": 0.2})
    assert (strict.verdict.kind, strict.verdict.parent) == ("fine_tuned", 0), strict.verdict.text


def test_no_tensors_in_common(tmp_path):
    write_checkpoint(tmp_path / "a", {"x.weight": np.ones(4, np.float32)})
    write_checkpoint(tmp_path / "c", {"y.weight": np.ones(4, np.float32)})
    r = provenance.fit(tmp_path / "c", [tmp_path / "a"])
    assert r.tensors == [] and r.verdict.kind == "unrelated" and "no tensors in common" in r.verdict.text
    assert r.overall.coefficient_mean == [0.0] and r.overall.coefficient_min == [0.0]
    assert "verdict:" in r.table()
