"""keras.applications models (random weights, randomised BatchNorm statistics) against Keras.

Slow-ish (about a minute per backend); CI runs it on the numpy backend and on tensorflow.
"""

import keras
import onnx
import pytest

import kerasonnx
from kerasonnx.testing import randomise_batchnorm

MODELS = ["MobileNetV2", "MobileNetV3Small", "ResNet50", "ResNet50V2", "EfficientNetB0", "EfficientNetV2B0",
          "DenseNet121", "ConvNeXtTiny", "Xception", "InceptionV3", "NASNetMobile"]
MAX_TRANSPOSES = {"MobileNetV2": 2, "ResNet50": 2}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_application_matches_keras(name, record_property):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None)
    randomise_batchnorm(model)
    onnx_model = kerasonnx.convert(model)
    onnx.checker.check_model(onnx_model, full_check=True)
    first_input = onnx_model.graph.input[0].type.tensor_type.shape.dim[0]
    assert first_input.dim_param == "batch", "batch dimension must stay dynamic"
    report = kerasonnx.verify(model, onnx_model, batch_sizes=(1, 2), atol=1e-4, rtol=1e-3)
    record_property("max_abs", report.max_abs)
    print(f"{name}: {report.summary()}")
    assert report.passed, report.summary()
    assert report.max_abs <= 1e-4
    if name in MAX_TRANSPOSES:
        transposes = sum(n.op_type == "Transpose" for n in onnx_model.graph.node)
        assert transposes <= MAX_TRANSPOSES[name]
    if name == "MobileNetV2":  # every BatchNormalization follows a conv: all must be folded away
        assert not any(n.op_type in ("Mul", "BatchNormalization") for n in onnx_model.graph.node)
