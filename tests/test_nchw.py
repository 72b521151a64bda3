"""Channels-first interface (inputs_as_nchw / outputs_as_nchw): onnxruntime on NCHW arrays equals
Keras on NHWC arrays transposed, and the graph keeps no Transpose."""

import collections
import os
import subprocess
import sys

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from keras import layers

import kerasonnx
from kerasonnx.testing import randomise_batchnorm

TO_NCHW = (0, 3, 1, 2)


def _conv_stack(x):
    h = layers.Conv2D(8, 3, padding="same")(x)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    h = layers.MaxPooling2D()(h)
    return layers.Conv2D(6, 3, padding="same", name="features")(h)


def _feature_extractor():
    x = keras.Input((16, 16, 3), name="image")
    model = keras.Model(x, _conv_stack(x))
    randomise_batchnorm(model, 1)
    return model


def _classifier():
    x = keras.Input((16, 16, 3), name="image")
    h = layers.Flatten()(layers.ReLU()(_conv_stack(x)))
    model = keras.Model(x, layers.Dense(5, name="logits")(h))
    randomise_batchnorm(model, 2)
    return model


def _run(proto, feed):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _transposes(proto):
    return collections.Counter(n.op_type for n in proto.graph.node)["Transpose"]


def _image(batch=2):
    return np.random.default_rng(0).normal(size=(batch, 16, 16, 3)).astype("float32")


def test_conv_output_as_nchw_has_no_transpose():
    model = _feature_extractor()
    proto = kerasonnx.convert(model, inputs_as_nchw=["image"], outputs_as_nchw=["features"])
    onnx.checker.check_model(proto, full_check=True)
    assert _transposes(proto) == 0
    dims = [[d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in (proto.graph.input[0], proto.graph.output[0])]
    assert dims[0][1:] == [3, 16, 16] and dims[1][1:] == [6, 8, 8]
    x = _image()
    got, = _run(proto, {"image": x.transpose(TO_NCHW)})
    expected = np.transpose(keras.ops.convert_to_numpy(model(x)), TO_NCHW)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_classifier_with_nchw_input_has_no_transpose():
    model = _classifier()
    proto = kerasonnx.convert(model, inputs_as_nchw="image")
    assert _transposes(proto) == 0  # the Flatten order is folded into the Dense weights
    x = _image()
    got, = _run(proto, {"image": x.transpose(TO_NCHW)})
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)), atol=1e-4, rtol=1e-3)


def test_three_d_input_as_nchw():
    x = keras.Input((12, 4), name="signal")
    model = keras.Model(x, layers.Conv1D(5, 3, name="out")(layers.Conv1D(7, 3, padding="same")(x)))
    proto = kerasonnx.convert(model, inputs_as_nchw=["signal"], outputs_as_nchw=["out"])
    assert _transposes(proto) == 0
    data = np.random.default_rng(1).normal(size=(3, 12, 4)).astype("float32")
    got, = _run(proto, {"signal": data.transpose(0, 2, 1)})
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(data)).transpose(0, 2, 1),
                               atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("options, message", [
    ({"inputs_as_nchw": ["imagee"]}, "unknown input name(s) 'imagee'"),
    ({"outputs_as_nchw": ["nope"]}, "unknown output name(s) 'nope'"),
    ({"outputs_as_nchw": ["logits"]}, "only 3-D to 5-D outputs"),
])
def test_bad_names_are_clear_errors(options, message):
    with pytest.raises(kerasonnx.InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kerasonnx.convert(_classifier(), **options)


def test_verify_feeds_and_compares_channels_first():
    model = _feature_extractor()
    options = {"inputs_as_nchw": ["image"], "outputs_as_nchw": ["features"]}
    report = kerasonnx.verify(model, kerasonnx.convert(model, **options), conversion_options=options)
    assert report.passed, report.summary()
    assert {shapes[0][1:] for shapes in report.input_shapes} == {(3, 16, 16)}  # fed channels-first
    assert len(report.checks) == 2  # batch sizes 1 and 3


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kerasonnx", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def test_cli_flags(tmp_path):
    model = _feature_extractor()
    model.save(tmp_path / "cnn.keras")
    out = tmp_path / "cnn.onnx"
    result = _cli("convert", tmp_path / "cnn.keras", "-o", out, "--inputs-as-nchw", "image",
                  "--outputs-as-nchw", "features", "--verify")
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout
    proto = onnx.load(out)
    assert _transposes(proto) == 0
    x = _image(1)
    got, = _run(proto, {"image": x.transpose(TO_NCHW)})
    np.testing.assert_allclose(got, np.transpose(keras.ops.convert_to_numpy(model(x)), TO_NCHW),
                               atol=1e-4, rtol=1e-3)

    bad = _cli("convert", tmp_path / "cnn.keras", "-o", tmp_path / "bad.onnx", "--inputs-as-nchw", "img")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "kerasonnx: error: inputs_as_nchw: unknown input name(s) 'img'; the model's inputs are 'image'"]
    assert not (tmp_path / "bad.onnx").exists()
