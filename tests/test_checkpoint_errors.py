"""Broken checkpoints and bad arguments give rio_rt.CheckpointError / ValueError / TypeError whose
message names the file or argument, never a crash. The checkpoint reader is reached through
rio_rt.provenance.fit, its first Python entry point."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import rio_rt
from checkpoints import safetensors_bytes, write_checkpoint
from rio_rt import provenance


def small(rng):
    return {"norm.weight": rng.standard_normal(8).astype(np.float32), "layers.0.mlp.gate.weight": rng.standard_normal((4, 8)).astype(np.float32)}


@pytest.fixture
def good(tmp_path, rng):
    write_checkpoint(tmp_path / "parent", small(rng))
    return tmp_path / "parent"


def fit_error(candidate, parents, exc=rio_rt.CheckpointError, **kw):
    with pytest.raises(exc) as info:
        provenance.fit(candidate, parents, **kw)
    return str(info.value)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(rio_rt.CheckpointError, ValueError) and issubclass(rio_rt.CheckpointError, rio_rt.RioError)


def test_nonexistent_path(tmp_path, good):
    msg = fit_error(tmp_path / "nope", [good])
    assert "nope" in msg and "no such" in msg
    msg = fit_error(good, [tmp_path / "gone"])
    assert "gone" in msg


def test_folder_without_weights(tmp_path, good):
    (tmp_path / "empty").mkdir()
    assert "neither model.safetensors" in fit_error(tmp_path / "empty", [good])


def test_missing_shard_is_named(tmp_path, rng, good):
    write_checkpoint(tmp_path / "sharded", small(rng), shards=2)
    (tmp_path / "sharded" / "model-00002-of-00002.safetensors").unlink()
    msg = fit_error(tmp_path / "sharded", [good])
    assert "model-00002-of-00002.safetensors" in msg and "missing" in msg


def test_truncated_file(tmp_path, good):
    path = good / "model.safetensors"
    data = path.read_bytes()
    for cut in (1, len(data) // 2, len(data) - 4):
        path.write_bytes(data[:cut])
        msg = fit_error(good, [good])
        assert "model.safetensors" in msg, msg


def test_header_lying_about_sizes(tmp_path, good):
    header = json.dumps({"norm.weight": {"dtype": "F32", "shape": [8], "data_offsets": [0, 16]}}).encode()
    (tmp_path / "liar").mkdir()
    (tmp_path / "liar" / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    msg = fit_error(tmp_path / "liar", [good])
    assert "norm.weight" in msg and "needs 32 bytes" in msg

    header = json.dumps({"norm.weight": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}).encode()
    (tmp_path / "liar" / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    assert "outside the 16-byte data section" in fit_error(tmp_path / "liar", [good])

    (tmp_path / "liar" / "model.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
    assert "truncated" in fit_error(tmp_path / "liar", [good])


def test_random_and_mutated_files_never_crash(tmp_path, rng, good):
    valid = safetensors_bytes(small(rng))
    target = tmp_path / "fuzz"
    target.mkdir()
    for i in range(300):
        if i % 3 == 0:
            data = rng.integers(0, 256, rng.integers(0, 200)).astype(np.uint8).tobytes()
        else:
            data = bytearray(valid)
            for pos in rng.integers(0, len(data), rng.integers(1, 5)):
                data[pos] = rng.integers(0, 256)
            data = bytes(data)
        (target / "model.safetensors").write_bytes(data)
        try:
            provenance.fit(target, [good])
        except rio_rt.CheckpointError as e:
            assert "model.safetensors" in str(e)


def test_shape_mismatch_names_the_tensor(tmp_path, rng, good):
    t = small(rng)
    t["layers.0.mlp.gate.weight"] = t["layers.0.mlp.gate.weight"].reshape(8, 4)
    write_checkpoint(tmp_path / "c", t)
    msg = fit_error(tmp_path / "c", [good])
    assert "layers.0.mlp.gate.weight" in msg and "[4, 8]" in msg and "[8, 4]" in msg


def test_broken_index(tmp_path, rng, good):
    write_checkpoint(tmp_path / "ix", small(rng), shards=2)
    index = tmp_path / "ix" / "model.safetensors.index.json"
    index.write_text("{not json")
    assert "model.safetensors.index.json" in fit_error(tmp_path / "ix", [good])
    index.write_text(json.dumps({"weight_map": {"model.language_model.norm.weight": "../outside.safetensors"}}))
    assert "inside the checkpoint folder" in fit_error(tmp_path / "ix", [good])


def test_unreadable_dtype_is_reported_not_fatal(tmp_path, rng, good):
    t = small(rng)
    write_checkpoint(tmp_path / "c", t, extra={"model.language_model.norm.weight_scale": np.arange(3, dtype=np.int64)})
    write_checkpoint(tmp_path / "p", t, extra={"model.language_model.norm.weight_scale": np.arange(3, dtype=np.int64)})
    r = provenance.fit(tmp_path / "c", [tmp_path / "p"])
    assert [n.name for n in r.not_compared] == ["norm.weight_scale"]
    assert "int64" in r.not_compared[0].reason
    assert r.verdict.kind == "identical"


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"parents": []}, ValueError, "parents"),
        ({"parents": "a/b"}, TypeError, "parents"),
        ({"parents": [3]}, TypeError, "parents[0]"),
        ({"sample": 0}, ValueError, "sample"),
        ({"sample": 1.5}, TypeError, "sample"),
        ({"seed": -1}, ValueError, "seed"),
        ({"thresholds": {"explaned": 0.1}}, ValueError, "explaned"),
        ({"thresholds": {"explained": -1.0}}, ValueError, "explained"),
        ({"progress": 3}, TypeError, "progress"),
    ],
)
def test_bad_arguments(good, kwargs, exc, words):
    args = {"parents": [good], **kwargs}
    with pytest.raises(exc, match=None) as info:
        provenance.fit(good, args.pop("parents"), **args)
    assert words in str(info.value)
