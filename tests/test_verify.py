"""Verification: coverage of batch sizes and dynamic dims, input ranges, user inputs, and the
layer-by-layer comparison naming the first Keras layer whose ONNX output diverges."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

import kerasonnx
from kerasonnx.converters import BUILTIN
from kerasonnx.verification import load_inputs
from kerasonnx.verification.divergence import locate_divergence
from models import mlp


def off_by_one(keras_class, layer_name="bad"):
    """A user registry whose converter for ``keras_class`` adds 1.0 to the output of the layer
    called ``layer_name`` and delegates every other layer to the built-in converter."""
    builtin = BUILTIN.lookup(keras_class)
    registry = kerasonnx.Registry()

    @registry.register(keras_class, layout=builtin.layout)
    def broken(ctx, op, *inputs):
        y = builtin.fn(ctx, op, *inputs)
        return ctx.op("Add", [y, ctx.scalar(1.0)]) if op.name == layer_name else y

    return registry


def dense_stack():
    x = keras.Input((8,), name="x")
    h = layers.Dense(16, activation="relu", name="first")(x)
    h = layers.Dense(16, activation="tanh", name="bad")(h)
    h = layers.Dropout(0.3, name="drop")(h)
    h = layers.Dense(16, activation="tanh", name="third")(h)
    return keras.Model(x, layers.Dense(3, name="last")(h))


def cnn():
    x = keras.Input((12, 12, 3), name="image")
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(x)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Conv2D(4, 3, padding="same", name="bad")(h)
    h = layers.Conv2D(6, 3, strides=2, name="conv_c")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, layers.Dense(2, name="head")(h))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.a = layers.Dense(8, activation="relu", name="a")
        self.bad = layers.Dense(8, name="bad")
        self.c = layers.Dense(2, name="c")

    def call(self, x):
        return self.c(self.bad(self.a(x)))


@pytest.mark.parametrize("build, keras_class", [(dense_stack, layers.Dense), (cnn, layers.Conv2D)])
def test_broken_converter_names_the_layer(build, keras_class):
    model = build()
    registry = off_by_one(keras_class)
    report = kerasonnx.verify(model, kerasonnx.convert(model, converters=registry),
                              conversion_options={"converters": registry})
    assert not report.passed
    assert report.divergence.layer.path == "bad"
    assert report.divergence.layer.class_name == keras_class.__name__
    assert report.divergence.layer.max_abs == pytest.approx(1.0, abs=1e-4)
    checks = {c.path: c.passed for c in report.divergence.layers}
    assert all(passed for path, passed in checks.items() if list(checks).index(path) < list(checks).index("bad"))
    with pytest.raises(kerasonnx.VerificationError, match=r"first diverging layer: 'bad' \(" + keras_class.__name__):
        report.raise_for_failure()


def test_broken_converter_in_subclassed_model():
    model = Subclassed()
    model(np.zeros((1, 5), np.float32))
    registry = off_by_one(layers.Dense)
    report = kerasonnx.verify(model, kerasonnx.convert(model, converters=registry),
                              conversion_options={"converters": registry})
    assert report.divergence.layer.path == "bad"


@pytest.mark.parametrize("build", [dense_stack, cnn, mlp])
def test_correct_models_pass_layer_by_layer(build):
    model = build()
    report = kerasonnx.verify(model, kerasonnx.convert(model))
    assert report.passed and report.divergence is None
    x = np.random.default_rng(1).standard_normal((2, *model.inputs[0].shape[1:])).astype(np.float32)
    located = locate_divergence(model, [x], rtol=1e-3, atol=1e-4)
    assert located.layer is None and located.layers and all(c.passed for c in located.layers)
    assert [c.path for c in located.layers][-1] == model.layers[-1].name


def test_mismatch_from_other_conversion_options_is_explained():
    model = dense_stack()
    broken = kerasonnx.convert(model, converters=off_by_one(layers.Dense))
    report = kerasonnx.verify(model, broken)  # reconverted without the broken registry: every layer matches
    assert not report.passed and report.divergence.layer is None
    assert "unoptimized conversion matches Keras" in report.summary()


def test_batch_sizes_and_dynamic_lengths_with_embedding_ids():
    ids = keras.Input((None,), dtype="int32", name="ids")
    h = layers.Embedding(5, 4, name="embed")(ids)  # ids >= 5 would make onnxruntime's Gather fail
    model = keras.Model(ids, layers.Dense(2)(layers.GlobalAveragePooling1D()(h)))
    report = kerasonnx.verify(model, kerasonnx.convert(model), batch_sizes=(1, 3))
    assert report.passed, report.summary()
    assert report.input_shapes == [((1, 16),), ((3, 16),), ((3, 24),)]


def test_static_batch_checks_its_own_batch_size():
    model = mlp()
    report = kerasonnx.verify(model, kerasonnx.convert(model, dynamic_batch=False), batch_sizes=(1, 3))
    assert report.passed and report.input_shapes == [((1, 8),)]


def test_user_inputs_from_npz_and_npy(tmp_path):
    a = keras.Input((4,), name="a")
    b = keras.Input((4,), name="b")
    model = keras.Model([a, b], layers.Dense(2)(layers.Subtract()([a, b])))
    proto = kerasonnx.convert(model)
    xa, xb = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    np.savez(tmp_path / "named.npz", b=xb, a=xa)
    np.savez(tmp_path / "positional.npz", xa, xb)
    for name in ("named.npz", "positional.npz"):
        arrays = load_inputs(tmp_path / name, ["a", "b"])
        assert np.array_equal(arrays[0], xa) and np.array_equal(arrays[1], xb)
        report = kerasonnx.verify(model, proto, inputs=arrays)
        assert report.passed and report.input_shapes == [((5, 4), (5, 4))]
    np.save(tmp_path / "one.npy", xa)
    with pytest.raises(kerasonnx.InvalidInputError, match="use a .npz file"):
        load_inputs(tmp_path / "one.npy", ["a", "b"])
    assert np.array_equal(load_inputs(tmp_path / "one.npy", ["a"])[0], xa)


BROKEN_CONVERTERS = '''
import kerasonnx
from keras import layers
from kerasonnx.converters import BUILTIN

_builtin = BUILTIN.lookup(layers.Dense)
registry = kerasonnx.Registry()


@registry.register(layers.Dense, layout=_builtin.layout)
def off_by_one_dense(ctx, op, x):
    y = _builtin.fn(ctx, op, x)
    return ctx.op("Add", [y, ctx.scalar(1.0)]) if op.name == "bad" else y
'''


def cli(*args):
    return subprocess.run([sys.executable, "-m", "kerasonnx", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ})


def test_cli_convert_verify_names_the_layer(tmp_path):
    model_file = tmp_path / "stack.keras"
    dense_stack().save(model_file)
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN_CONVERTERS)
    out = tmp_path / "stack.onnx"
    report = tmp_path / "report.md"
    result = cli("convert", model_file, "-o", out, "--custom-objects", broken, "--verify", "--batch-sizes", "2",
                 "--report", report)
    assert result.returncode == 6 and not out.exists()
    assert result.stderr.count("\n") == 1 and "first diverging layer: 'bad' (Dense)" in result.stderr
    text = report.read_text()  # the report of a failed verification is still written
    assert "| verification | **FAILED** |" in text and "first diverging layer: 'bad' (Dense)" in text


def test_verify_command(tmp_path, capsys):
    from kerasonnx.cli import main

    model = dense_stack()
    model_file, out = tmp_path / "stack.keras", tmp_path / "stack.onnx"
    model.save(model_file)
    kerasonnx.save(kerasonnx.convert(model), out)
    assert main(["verify", str(model_file), str(out), "--batch-sizes", "2,4"]) == 0
    printed = capsys.readouterr().out
    assert "verify passed" in printed and "(2, 8); (4, 8)" in printed

    np.savez(tmp_path / "inputs.npz", x=np.ones((3, 8), np.float32))
    assert main(["verify", str(model_file), str(out), "--inputs", str(tmp_path / "inputs.npz")]) == 0
    assert "input shapes checked: (3, 8)" in capsys.readouterr().out

    assert main(["verify", str(model_file), str(out), "--batch-sizes", "0"]) == 2
    assert main(["verify", str(model_file), str(tmp_path / "missing.onnx")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "--batch-sizes" in errors[0] and "ONNX file not found" in errors[1]
