"""Recurrent converters: native ONNX LSTM/GRU/RNN ops, and masks (left/right padding, holes, empty rows)."""

import keras
import numpy as np
import onnx
import pytest
from keras import layers

import kerasonnx
from kerasonnx.converters import BUILTIN
from kerasonnx.converters import layers_recurrent
from kerasonnx.testing import build_case_model

CASES = {c.name: c for c in BUILTIN.cases()}
# Keras activations the ONNX recurrent ops implement (every other one runs in an ONNX Loop)
NATIVE = {"sigmoid", "tanh", "relu", "linear", "softsign", "softplus", "elu", "leaky_relu", "hard_sigmoid"}
ONNX_OP = {layers.LSTMCell: "LSTM", layers.GRUCell: "GRU", layers.SimpleRNNCell: "RNN"}


def _recurrent_layers(model):
    for layer in model.layers:
        if isinstance(layer, layers.Bidirectional):
            yield layer.forward_layer
            yield layer.backward_layer
        elif isinstance(layer, layers.RNN):
            yield layer


def _activation_names(layer):
    cell = layer.cell
    fns = [cell.activation] + ([cell.recurrent_activation] if hasattr(cell, "recurrent_activation") else [])
    return {kerasonnx.converters.activations.activation_name(f) for f in fns}


def _op_types(proto):
    types = [n.op_type for n in proto.graph.node]
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                types += [n.op_type for n in attr.g.node]
    return types


RNN_CASES = sorted(n for n in CASES if n.startswith(("rnn_lstm", "rnn_gru", "rnn_simple", "rnn_generic",
                                                      "bidirectional_")))


@pytest.mark.parametrize("name", RNN_CASES)
def test_native_recurrent_op_whenever_activations_allow(name):
    model = build_case_model(CASES[name])
    proto = kerasonnx.convert(model)
    ops = _op_types(proto)
    rnns = list(_recurrent_layers(model))
    assert rnns
    for layer in rnns:
        if _activation_names(layer) <= NATIVE:
            assert ONNX_OP[type(layer.cell)] in ops, f"{layer.name} should map to ONNX {ONNX_OP[type(layer.cell)]}"
        else:
            assert "Loop" in ops
    if all(_activation_names(layer) <= NATIVE for layer in rnns):
        assert "Loop" not in ops


def test_bidirectional_is_one_bidirectional_op():
    model = build_case_model(CASES["bidirectional_concat"])
    nodes = [n for n in kerasonnx.convert(model).graph.node if n.op_type == "LSTM"]
    assert len(nodes) == 1
    assert {a.name: a for a in nodes[0].attribute}["direction"].s == b"bidirectional"


# ---- masks with explicit inputs ------------------------------------------------------------------

IDS = np.array([
    [3, 1, 2, 2, 0, 0, 0],  # right padded
    [0, 0, 0, 1, 3, 2, 1],  # left padded
    [2, 0, 1, 0, 0, 3, 0],  # holes
    [1, 2, 3, 1, 2, 3, 1],  # no padding
    [0, 0, 0, 0, 0, 0, 0],  # everything masked
], dtype="int32")


def _masked_model(make_rnn, n_states=0, units=4, explicit_mask=False):
    ids = keras.Input((None,), dtype="int32")
    states = [keras.Input((units,)) for _ in range(n_states)]
    x = layers.Embedding(4, 3, mask_zero=True)(ids)
    kwargs = {}
    if states:
        kwargs["initial_state"] = states
    if explicit_mask or states:  # Keras does not propagate masks to a call with initial_state
        kwargs["mask"] = keras.ops.not_equal(ids, 0)
    outputs = make_rnn()(x, **kwargs)
    return keras.Model([ids, *states], outputs)


MASKED_MODELS = {
    "lstm_last": lambda: _masked_model(lambda: layers.LSTM(4, return_state=True)),
    "lstm_sequences": lambda: _masked_model(lambda: layers.LSTM(4, return_sequences=True, return_state=True)),
    "lstm_backwards": lambda: _masked_model(lambda: layers.LSTM(4, return_sequences=True, go_backwards=True,
                                                                return_state=True)),
    "lstm_initial_state": lambda: _masked_model(lambda: layers.LSTM(4, return_sequences=True, return_state=True), 2),
    "lstm_initial_state_backwards": lambda: _masked_model(
        lambda: layers.LSTM(4, return_sequences=True, return_state=True, go_backwards=True), 2),
    "lstm_unroll_initial_state": lambda: _masked_model(
        lambda: layers.LSTM(4, return_sequences=True, return_state=True, unroll=True), 2),
    "lstm_zero_output": lambda: _masked_model(lambda: layers.LSTM(4, return_sequences=True,
                                                                  zero_output_for_mask=True), 2),
    "gru_reset_after": lambda: _masked_model(lambda: layers.GRU(4, return_sequences=True, return_state=True), 1),
    "gru_reset_before_backwards": lambda: _masked_model(
        lambda: layers.GRU(4, reset_after=False, go_backwards=True, return_sequences=True, return_state=True), 1),
    "simple_rnn": lambda: _masked_model(lambda: layers.SimpleRNN(4, return_sequences=True, return_state=True), 1),
    "bidirectional_concat": lambda: _masked_model(lambda: layers.Bidirectional(
        layers.LSTM(4, return_sequences=True, return_state=True)), explicit_mask=True),
    "bidirectional_last_state": lambda: _masked_model(lambda: layers.Bidirectional(
        layers.GRU(2, return_state=True), merge_mode="sum"), 2, units=2),
    "loop_lstm": lambda: _masked_model(lambda: layers.LSTM(4, activation="gelu", return_sequences=True,
                                                           return_state=True), 2),
    "loop_gru_backwards_unroll": lambda: _masked_model(
        lambda: layers.GRU(4, activation="relu6", go_backwards=True, unroll=True, return_sequences=True,
                           return_state=True), 1),
    "loop_bidirectional": lambda: _masked_model(lambda: layers.Bidirectional(
        layers.SimpleRNN(3, activation="selu", return_sequences=True)), explicit_mask=True),
    # a layer that casts its input gets the Embedding's mask at run time but the graph has no mask edge
    "implicit_mask_float64_lstm": lambda: _masked_model(lambda: layers.LSTM(4, return_sequences=True,
                                                                            dtype="float64")),
    "implicit_mask_float64_bidirectional": lambda: _masked_model(lambda: layers.Bidirectional(
        layers.GRU(3, return_sequences=True, return_state=True, dtype="float64"), dtype="float64")),
}


def _inputs(model, rows):
    rng = np.random.default_rng(0)
    states = [rng.standard_normal((len(rows), int(t.shape[-1]))).astype("float32") for t in model.inputs[1:]]
    return [IDS[rows], *states]


@pytest.mark.parametrize("rows", [[0], [1], [2], [4], [0, 1, 2, 3, 4]], ids=["right", "left", "holes", "empty", "all"])
@pytest.mark.parametrize("name", sorted(MASKED_MODELS))
def test_masked_models_match_keras(name, rows):
    keras.utils.set_random_seed(1)
    model = MASKED_MODELS[name]()
    proto = kerasonnx.convert(model)
    onnx.checker.check_model(proto, full_check=True)
    report = kerasonnx.verify(model, proto, inputs=_inputs(model, rows))
    assert report.passed, report.summary()
    longer = _inputs(model, rows)  # a second, longer sequence: the same padding pattern, twice as long
    longer[0] = np.concatenate([longer[0], longer[0]], axis=1)
    report = kerasonnx.verify(model, proto, inputs=longer)
    assert report.passed, report.summary()


def test_loop_fallback_is_reported(caplog):
    x = keras.Input((None, 3))
    model = keras.Model(x, layers.LSTM(4, activation="gelu")(x))
    with caplog.at_level("WARNING", logger="kerasonnx"):
        proto = kerasonnx.convert(model)
    assert any("converted as an ONNX Loop" in r.getMessage() for r in caplog.records)
    assert any(n.op_type == "Loop" for n in proto.graph.node)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_masking_layer_padding(padding):
    keras.utils.set_random_seed(2)
    x = keras.Input((None, 2))
    y = layers.Bidirectional(layers.LSTM(3, return_sequences=True))(layers.Masking(0.0)(x))
    model = keras.Model(x, layers.GRU(2)(y))
    data = np.random.default_rng(3).standard_normal((3, 6, 2)).astype("float32")
    for row, n in enumerate([2, 4, 6]):
        if padding == "left":
            data[row, :6 - n] = 0.0
        else:
            data[row, n:] = 0.0
    report = kerasonnx.verify(model, kerasonnx.convert(model), inputs=[data])
    assert report.passed, report.summary()


@pytest.mark.parametrize("name", ["rnn_lstm_masked_sequences", "bidirectional_masked", "rnn_gru_loop",
                                  "rnn_gru_masked_initial_state", "time_distributed_conv2d"])
def test_min_opset(name):
    from kerasonnx.testing import run_case

    _, report = run_case(CASES[name], opset=13)
    assert report.passed, report.summary()


# ---- unsupported configurations fail clearly ------------------------------------------------------

def test_stateful_rnn_is_unsupported():
    model = keras.Sequential([keras.Input((5, 3), batch_size=2), layers.LSTM(4, stateful=True)])
    with pytest.raises(kerasonnx.UnsupportedError, match="stateful"):
        kerasonnx.convert(model)


def test_conv_lstm_runs_in_a_loop_without_transposes_around_convs():
    x = keras.Input((None, 6, 6, 2))
    y = layers.ConvLSTM2D(3, 3, return_sequences=True)(x)
    model = keras.Model(x, layers.TimeDistributed(layers.Conv2D(2, 1))(y))
    proto = kerasonnx.convert(model)
    assert "Loop" in _op_types(proto) and "Conv" in _op_types(proto)
    data = np.random.default_rng(6).standard_normal((2, 4, 6, 6, 2)).astype("float32")
    report = kerasonnx.verify(model, proto, inputs=[data])
    assert report.passed, report.summary()


def test_stacked_cells_are_unsupported():
    model = keras.Sequential([keras.Input((None, 3)), layers.RNN([layers.LSTMCell(3), layers.GRUCell(2)])])
    with pytest.raises(kerasonnx.UnsupportedError, match="cell"):
        kerasonnx.convert(model)


# ---- batch-major layout (layout=1), for runtimes that implement it -------------------------------

@pytest.mark.parametrize("make", [
    lambda: layers.LSTM(4, return_sequences=True, return_state=True),
    lambda: layers.GRU(3, return_sequences=True, go_backwards=True),
], ids=["lstm", "gru_backwards"])
def test_batch_major_layout_matches_keras_in_reference_runtime(make, monkeypatch):
    from onnx.reference import ReferenceEvaluator

    monkeypatch.setattr(layers_recurrent, "BATCH_MAJOR_MIN_OPSET", 14)
    keras.utils.set_random_seed(4)
    x = keras.Input((None, 3))
    model = keras.Model(x, make()(x))
    proto = kerasonnx.convert(model, opset=14)
    rnn = [n for n in proto.graph.node if n.op_type in ("LSTM", "GRU")]
    assert rnn and all({a.name: a.i for a in n.attribute}.get("layout") == 1 for n in rnn)
    assert "Transpose" not in [n.op_type for n in proto.graph.node]
    data = np.random.default_rng(5).standard_normal((2, 5, 3)).astype("float32")
    got = ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: data})
    expected = keras.tree.flatten(model(data))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, keras.ops.convert_to_numpy(e), atol=1e-5)
