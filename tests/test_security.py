"""Loading never runs code stored in a model file unless the user opts in.

The model holds a Lambda whose code writes a marker file. Without ``safe_mode=False`` / ``--unsafe``
loading and converting must fail with the one-line explanation and the marker must not appear; with
the opt-in the model converts (and the marker proves its code did run).
"""

import os
import subprocess
import sys

import keras
import pytest
from keras import layers

import kerasonnx

FORMATS = ["keras", "h5"]


def _model_writing(marker):
    # eval: the lambda's code (stored in the file as bytecode) holds the marker path as a constant
    writes_marker = eval(f"lambda t: (open({str(marker)!r}, 'w').write('code ran'), t)[1]")
    x = keras.Input((4,), name="x")
    h = layers.Lambda(writes_marker, name="writes_marker")(layers.Dense(3, name="dense")(x))
    return keras.Model(x, layers.Dense(2, name="out")(h))


@pytest.fixture(scope="module", params=FORMATS)
def booby_trapped(request, tmp_path_factory):
    """(model file, marker path): the marker is removed after saving (building the model ran the code)."""
    directory = tmp_path_factory.mktemp(f"trapped_{request.param}")
    marker = directory / "marker.txt"
    path = directory / f"trapped.{request.param}"
    _model_writing(marker).save(path)
    marker.unlink()
    return path, marker


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kerasonnx", "convert", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "KERAS_BACKEND": "numpy"}, timeout=600)


def test_api_refuses_without_opt_in(booby_trapped):
    path, marker = booby_trapped
    with pytest.raises(kerasonnx.ModelLoadError, match="Lambda.*safe_mode=False"):
        kerasonnx.load_model(path)
    assert not marker.exists()


def test_cli_refuses_without_unsafe(booby_trapped):
    path, marker = booby_trapped
    out = path.with_name("refused.onnx")
    result = _cli(path, "-o", out, cwd=path.parent)
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--unsafe" in result.stderr
    assert not marker.exists() and not out.exists()


def test_cli_converts_with_unsafe(booby_trapped):
    path, marker = booby_trapped
    out = path.with_name("allowed.onnx")
    try:
        result = _cli(path, "-o", out, "--unsafe", "--verify", cwd=path.parent)
        assert result.returncode == 0, result.stderr
        assert out.exists() and "verified" in result.stdout
        assert marker.exists()  # the opt-in is what let the file's code run
    finally:
        marker.unlink(missing_ok=True)
        out.unlink(missing_ok=True)


def test_api_loads_with_safe_mode_false(booby_trapped):
    path, marker = booby_trapped
    try:
        model = kerasonnx.load_model(path, safe_mode=False)
        assert kerasonnx.verify(model, kerasonnx.convert(model)).passed
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)
