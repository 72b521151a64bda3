"""Custom layers and keras.ops everywhere: converted by tracing, with dynamic batch and sequence
length, compared with Keras at two sequence lengths."""

import numpy as np
import onnx
import pytest

import kerasonnx
import modern_models as mm

rng = np.random.default_rng(0)


def _ids(batch, length):
    return rng.integers(0, mm.VOCAB, size=(batch, length)).astype("int32")


CASES = {
    "bert_like": (mm.bert_like, lambda b, t: [_ids(b, t)]),
    "rotary_gqa_decoder": (mm.rotary_gqa_decoder, lambda b, t: [_ids(b, t)]),
    "raw_ops_functional": (mm.raw_ops_functional, lambda b, t: [rng.normal(size=(b, t, 6)).astype("float32")]),
    "control_flow_layers": (mm.control_flow_layers,
                            lambda b, t: [rng.normal(size=(b, t, 4)).astype("float32") + (t % 2 - 0.5)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_model_matches_keras_at_two_lengths(name):
    build, make_inputs = CASES[name]
    model = build()
    proto = kerasonnx.convert(model)
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_param, "batch and sequence must stay dynamic"
    for batch, length in ((1, 5), (3, 11)):
        report = kerasonnx.verify(model, proto, inputs=make_inputs(batch, length))
        assert report.passed and report.max_abs <= 1e-4, report.summary()


def test_vit_like_patch_embedding():
    model = mm.vit_like()
    proto = kerasonnx.convert(model)
    report = kerasonnx.verify(model, proto, batch_sizes=(1, 3))
    assert report.passed and report.max_abs <= 1e-4, report.summary()
