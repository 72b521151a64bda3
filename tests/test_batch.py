"""Batch conversion: `kerasonnx convert DIR_OR_GLOB... -o OUTDIR` converts in parallel worker
processes, continues past failures, prints a summary table and exits non-zero on any failure."""

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from kerasonnx.cli.batch import Outcome, batch_exit_code, expand_models, is_batch, output_paths
from models import mlp, with_untraceable_layers

MODELS_PY = Path(__file__).with_name("models.py")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "kerasonnx", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**os.environ})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("batch")
    mlp().save(directory / "good.keras")
    with_untraceable_layers().save(directory / "unsupported.keras")  # NumpyInside cannot be traced
    (directory / "corrupt.keras").write_bytes(b"PK\x03\x04 this is not a zip file")
    (directory / "notes.txt").write_text("not a model")
    return directory


def test_directory_with_failures(model_dir, tmp_path):
    out = tmp_path / "onnx"
    result = cli("convert", model_dir, "-o", out, "--custom-objects", MODELS_PY, "--jobs", "2")
    assert result.returncode == 1, result.stdout + result.stderr  # different failures: exit 1
    assert sorted(p.name for p in out.iterdir()) == ["good.onnx"]
    onnx.checker.check_model(onnx.load(out / "good.onnx"), full_check=True)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    assert set(rows) == {str(model_dir / n) for n in ("corrupt.keras", "good.keras", "unsupported.keras")}
    assert " ok " in rows[str(model_dir / "good.keras")] and "nodes" in rows[str(model_dir / "good.keras")]
    assert "failed (3)" in rows[str(model_dir / "corrupt.keras")]
    assert "failed (4)" in rows[str(model_dir / "unsupported.keras")]
    assert "'numpy_inside' (NumpyInside" in rows[str(model_dir / "unsupported.keras")]
    assert result.stdout.splitlines()[-1] == "1 of 3 model(s) converted"
    assert result.stderr.strip() == "kerasonnx: error: 2 of 3 model(s) failed to convert"


def test_expansion_and_outputs(model_dir, tmp_path):
    assert is_batch([str(model_dir)]) and is_batch([str(model_dir / "*.keras")])
    assert is_batch(["a.keras", "b.keras"]) and not is_batch([str(model_dir / "good.keras")])
    models = expand_models([str(model_dir / "g*.keras"), str(model_dir)])
    assert [m.name for m in models] == ["good.keras", "corrupt.keras", "unsupported.keras"]
    assert output_paths(models, str(tmp_path / "new")) == [tmp_path / "new" / f"{m.stem}.onnx" for m in models]
    assert output_paths(models, None)[0] == model_dir / "good.onnx"
    from kerasonnx import InvalidInputError, OutputWriteError

    with pytest.raises(InvalidInputError, match="no .keras/.h5 model files"):
        expand_models([str(tmp_path / "*.keras")])
    with pytest.raises(InvalidInputError, match="same file"):
        output_paths([Path("a/m.keras"), Path("b/m.keras")], str(tmp_path))
    with pytest.raises(OutputWriteError, match="must be a directory"):
        output_paths(models, str(model_dir / "notes.txt"))


def test_exit_code_of_failures():
    assert batch_exit_code([Outcome("a", 4, 0, ""), Outcome("b", 4, 0, "")]) == 4
    assert batch_exit_code([Outcome("a", 4, 0, ""), Outcome("b", 3, 0, "")]) == 1
