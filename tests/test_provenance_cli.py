"""The ``rio-rt provenance`` command: table, --json, --plot, progress on stderr, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from checkpoints import cast, random_model, write_checkpoint
from rio_rt import cli


@pytest.fixture
def folders(tmp_path, rng):
    a = cast(random_model(rng), np.float32)
    b = cast(random_model(rng), np.float32)
    c = cast({k: 0.3 * a[k] + 0.7 * b[k] for k in a}, np.float32)
    for name, t in (("a", a), ("b", b), ("c", c)):
        write_checkpoint(tmp_path / name, t)
    return [str(tmp_path / n) for n in "abc"]


def test_json_output(folders, capsys):
    a, b, c = folders
    assert cli.main(["provenance", c, "--parent", a, "--parent", b, "--json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["verdict"]["kind"] == "blend"
    np.testing.assert_allclose(doc["verdict"]["coefficients"], [0.3, 0.7], atol=1e-3)
    assert doc["parents"] == [a, b] and doc["mode"] == "full"
    assert "100.0%" in err  # the progress bar finished on stderr


def test_table_output(folders, capsys):
    a, b, c = folders
    assert cli.main(["provenance", c, "--parent", a, "--parent", b, "--quick", "--tensors", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "verdict: linear blend of parents" in out and "quick mode" in out
    assert "layer 0" in out and "overall" in out and "layers.1.mlp.experts.gate_up_proj" in out


def test_plot(folders, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a, b, c = folders
    png = tmp_path / "coef.png"
    assert cli.main(["provenance", c, "--parent", a, "--parent", b, "--plot", str(png), "--no-progress"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_go_to_stderr_with_exit_code_2(folders, tmp_path, capsys):
    a, b, c = folders
    assert cli.main(["provenance", str(tmp_path / "missing"), "--parent", a]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "missing" in err and err.startswith("rio-rt provenance: error:")
