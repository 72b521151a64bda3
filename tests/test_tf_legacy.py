"""tf_keras (Keras 2) models, as files and in memory, convert whatever TF_USE_LEGACY_KERAS says.

Needs TensorFlow and tf_keras (skipped otherwise). Every model of tests/legacy_zoo.py is saved as
``.h5`` and as a tf_keras ``.keras`` file, converted by the CLI in a fresh process with
``TF_USE_LEGACY_KERAS=1`` and again with it unset (one process per setting runs the CLI entry point on
every file: TensorFlow's import dominates), and the onnxruntime outputs are compared with the tf_keras
model's own ``predict``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

import onnxruntime as ort  # noqa: E402

import kerasonnx  # noqa: E402
from legacy_zoo import NEEDS_UNSAFE, ZOO, sample_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LEGACY_ENV = {"legacy=1": "1", "legacy-unset": None}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (directory holding model.h5 and model.keras, inputs, tf_keras outputs)."""
    root = tmp_path_factory.mktemp("tf_keras_zoo")
    result = {}
    for name, build in ZOO.items():
        tf_keras.utils.set_random_seed(0)
        model = build()
        inputs = sample_inputs(model, batch=2, seed=3)
        outputs = model.predict(inputs, verbose=0)
        directory = root / name
        directory.mkdir()
        model.save(directory / "model.h5")
        model.save(directory / "model.keras")
        result[name] = (directory, inputs, outputs if isinstance(outputs, list) else [outputs])
    return result


def _env(legacy: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    if legacy is not None:
        env["TF_USE_LEGACY_KERAS"] = legacy
    return env


def _cli(args, legacy):
    return subprocess.run([sys.executable, "-m", "kerasonnx", "convert", *map(str, args)], capture_output=True,
                          text=True, env=_env(legacy), cwd=ROOT, timeout=600)


def _onnx_outputs(path, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})


def _max_abs(got, expected) -> float:
    assert [g.shape for g in got] == [np.shape(e) for e in expected]
    return max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))


# Runs the CLI's entry point (kerasonnx.cli.main, what `python -m kerasonnx` calls) on many files in ONE
# fresh process, so that the TensorFlow import is paid once per environment, not once per file.
_CLI_DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys
    from kerasonnx.cli import main
    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["convert", *argv])
        results.append({"code": code, "stderr": err.getvalue()})
    print("RESULTS" + json.dumps(results))
""")


def _cli_in_one_process(jobs: list[list[str]], legacy) -> list[dict]:
    result = subprocess.run([sys.executable, "-c", _CLI_DRIVER, json.dumps(jobs)], capture_output=True,
                            text=True, env=_env(legacy), cwd=ROOT, timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.split("RESULTS", 1)[1])


@pytest.fixture(scope="module")
def converted(saved, tmp_path_factory):
    """(legacy setting, name, suffix) -> (CLI result, path of the .onnx written)."""
    out_dir = tmp_path_factory.mktemp("onnx")
    table = {}
    for legacy, value in LEGACY_ENV.items():
        keys, jobs = [], []
        for name, (directory, _, _) in saved.items():
            for suffix in ("h5", "keras"):
                out = out_dir / f"{name}-{suffix}-{legacy}.onnx"
                unsafe = ["--unsafe"] if name in NEEDS_UNSAFE else []
                keys.append((legacy, name, suffix, out))
                jobs.append([str(directory / f"model.{suffix}"), "-o", str(out), *unsafe])
        for (legacy_, name, suffix, out), result in zip(keys, _cli_in_one_process(jobs, value)):
            table[legacy_, name, suffix] = (result, out)
    return table


@pytest.mark.parametrize("legacy", list(LEGACY_ENV))
@pytest.mark.parametrize("suffix", ["h5", "keras"])
@pytest.mark.parametrize("name", list(ZOO))
def test_cli_converts_tf_keras_file(saved, converted, name, suffix, legacy):
    _, inputs, expected = saved[name]
    result, out = converted[legacy, name, suffix]
    assert result["code"] == 0, result["stderr"]
    assert _max_abs(_onnx_outputs(out, inputs), expected) <= 1e-4


def test_cli_refuses_lambda_without_unsafe(saved, tmp_path):
    directory = saved["lambda"][0]
    out = tmp_path / "model.onnx"
    result = _cli([directory / "model.h5", "-o", out], None)
    assert result.returncode == 3
    ours = [line for line in result.stderr.splitlines() if line.startswith("kerasonnx")]
    assert len(ours) == 1 and ours[0].startswith("kerasonnx: error:") and "--unsafe" in ours[0]
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("name", list(ZOO))
def test_in_memory_tf_keras_model_converts_and_verifies(name):
    tf_keras.utils.set_random_seed(0)
    model = ZOO[name]()
    inputs = sample_inputs(model, batch=2, seed=5)
    expected = model.predict(inputs, verbose=0)
    onnx_model = kerasonnx.convert(model)
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})
    assert _max_abs(got, [expected]) <= 1e-4
    report = kerasonnx.verify(model, onnx_model)
    assert report.passed, report.summary()


def test_keras3_and_tf_keras_models_convert_in_one_process():
    import keras

    x = keras.Input((4,))
    keras3_model = keras.Model(x, keras.layers.Dense(2)(x))
    tf_keras_model = ZOO["lstm"]()
    assert kerasonnx.verify(keras3_model, kerasonnx.convert(keras3_model)).passed
    assert kerasonnx.verify(tf_keras_model, kerasonnx.convert(tf_keras_model)).passed


_TF_KERAS_SCRIPT = textwrap.dedent("""
    import numpy as np, onnxruntime as ort, tensorflow as tf
    import kerasonnx
    x = tf.keras.Input((6, 4))
    h = tf.keras.layers.LSTM(5)(x)
    model = tf.keras.Model(x, tf.keras.layers.Dense(3)(h))
    data = np.random.default_rng(0).normal(size=(2, 6, 4)).astype("float32")
    session = ort.InferenceSession(kerasonnx.convert(model).SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: data})[0]
    print(type(model).__module__.split(".")[0], float(np.abs(got - model.predict(data, verbose=0)).max()))
""")


@pytest.mark.parametrize("legacy", list(LEGACY_ENV))
def test_tf_keras_namespace_model_converts_whatever_the_variable(legacy):
    """``tf.keras`` is tf_keras with TF_USE_LEGACY_KERAS=1 and Keras 3 without: both convert."""
    result = subprocess.run([sys.executable, "-c", _TF_KERAS_SCRIPT], capture_output=True, text=True,
                            env=_env(LEGACY_ENV[legacy]), cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    package, error = result.stdout.split()[-2:]
    assert package == ("tf_keras" if LEGACY_ENV[legacy] == "1" else "keras")
    assert float(error) <= 1e-4
