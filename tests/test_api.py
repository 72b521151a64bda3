"""Public API behaviour: naming, signatures, opsets, nested/Sequential models, registries, saving."""

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from keras import layers

import kerasonnx
from kerasonnx.core.opsets import MIN_OPSET, max_supported_opset
from models import Doubler, PythonBranch, mlp, two_io, with_custom_layers, with_untraceable_layers


def run(onnx_model, feeds):
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_names_follow_keras_and_can_be_overridden():
    model = two_io()
    proto = kerasonnx.convert(model)
    assert [i.name for i in proto.graph.input] == ["a", "b"]
    assert [o.name for o in proto.graph.output] == ["sum_branch", "diff_branch"]
    proto = kerasonnx.convert(model, input_names=["x", "y"], output_names=["s", "d"])
    assert [i.name for i in proto.graph.input] == ["x", "y"]
    assert [o.name for o in proto.graph.output] == ["s", "d"]
    assert kerasonnx.verify(model, proto).passed


def test_node_names_are_readable():
    proto = kerasonnx.convert(mlp())
    assert any(n.name.startswith("hidden/") for n in proto.graph.node)
    assert any(i.name.startswith("hidden/") for i in proto.graph.initializer)


@pytest.mark.parametrize("opset", range(MIN_OPSET, max_supported_opset() + 1))
def test_every_opset_converts(opset):
    model = mlp()
    proto = kerasonnx.convert(model, opset=opset)
    assert proto.opset_import[0].version == opset
    onnx.checker.check_model(proto, full_check=True)
    assert kerasonnx.verify(model, proto).passed


def test_default_opset_is_newest_supported():
    assert kerasonnx.convert(mlp()).opset_import[0].version == max_supported_opset()


@pytest.mark.parametrize("opset", [12, 99, "13"])
def test_bad_opset_is_rejected(opset):
    with pytest.raises(kerasonnx.InvalidInputError, match="opset"):
        kerasonnx.convert(mlp(), opset=opset)


def test_dynamic_and_static_batch():
    proto = kerasonnx.convert(mlp())
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    proto = kerasonnx.convert(mlp(), dynamic_batch=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_input_signature_named_dims():
    x = keras.Input((None, 3), name="seq")
    model = keras.Model(x, layers.Dense(2)(x))
    proto = kerasonnx.convert(model, input_signature=[(None, "time", 3)])
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_param, dims[2].dim_value) == ("batch", "time", 3)
    out = run(proto, {"seq": np.ones((2, 7, 3), np.float32)})[0]
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(model(np.ones((2, 7, 3), np.float32))), atol=1e-5)


def test_input_signature_dict_and_errors():
    model = two_io()
    proto = kerasonnx.convert(model, input_signature={"a": (None, 4)})
    assert len(proto.graph.input) == 2
    with pytest.raises(kerasonnx.InvalidInputError, match="rank"):
        kerasonnx.convert(model, input_signature=[(None, 4, 1), (None, 4)])
    with pytest.raises(kerasonnx.InvalidInputError, match="does not fit"):
        kerasonnx.convert(model, input_signature=[(None, 5), (None, 4)])
    with pytest.raises(kerasonnx.InvalidInputError, match="not model inputs"):
        kerasonnx.convert(model, input_signature={"zzz": (None, 4)})


def test_sequential_with_and_without_input():
    with_input = keras.Sequential([keras.Input((5,)), layers.Dense(3), layers.Activation("relu")])
    assert kerasonnx.verify(with_input, kerasonnx.convert(with_input)).passed
    without = keras.Sequential([layers.Dense(3), layers.Dense(2)])
    proto = kerasonnx.convert(without, input_signature=[(None, 5)])
    assert kerasonnx.verify(without, proto).passed
    unbuilt = keras.Sequential([layers.Dense(3)])
    with pytest.raises(kerasonnx.InvalidInputError, match="no input shape"):
        kerasonnx.convert(unbuilt)


def test_nested_models():
    inner_seq = keras.Sequential([keras.Input((8,)), layers.Dense(8, activation="relu")], name="inner_seq")
    inner_fn = mlp(name="inner_fn")
    x = keras.Input((8,), name="x")
    y = inner_fn(inner_seq(x))
    outer = keras.Model(x, y)
    proto = kerasonnx.convert(outer)
    assert any(n.name.startswith("inner_fn/") for n in proto.graph.node)
    assert kerasonnx.verify(outer, proto).passed


def test_unsupported_lists_every_layer():
    with pytest.raises(kerasonnx.UnsupportedError) as info:
        kerasonnx.convert(with_untraceable_layers())
    message = str(info.value)
    assert "'branchy' (PythonBranch: Python control flow on a tensor value" in message
    assert "'numpy_inside' (NumpyInside: tracing call() failed" in message
    assert "Registry" in message and len(message.splitlines()) == 1
    assert {i.layer_name for i in info.value.items} == {"branchy", "numpy_inside"}


def test_ops_without_onnx_equivalent_say_why_and_a_user_converter_still_wins():
    from kerasonnx.core.walker import ops_class

    x = keras.Input((3, 3), name="x")
    model = keras.Model(x, keras.ops.linalg.inv(x) + keras.ops.linalg.det(x)[:, None, None])
    with pytest.raises(kerasonnx.UnsupportedError) as info:
        kerasonnx.convert(model)
    (item,) = info.value.items  # det converts; inv is refused with the built-in reason
    assert item.class_name == "Inv" and "matrix decomposition or solver" in item.reason

    registry = kerasonnx.Registry()

    @registry.register(ops_class("linalg", "Inv"))
    def transpose_instead(ctx, op, a):  # not an inverse: only shows that the refusal does not block it
        return ctx.op("Transpose", [a], {"perm": [0, 2, 1]})

    assert kerasonnx.convert(model, converters=registry).graph.node


def test_custom_layers_convert_by_tracing():
    model = with_custom_layers()
    proto = kerasonnx.convert(model)
    assert [n.name for n in proto.graph.node if n.name.startswith("doubler/")]
    assert kerasonnx.verify(model, proto).passed


def test_user_registry_wins_over_tracing_without_global_change():
    registry = kerasonnx.Registry()

    @registry.register(Doubler, layout=kerasonnx.Layout.ANY)
    def doubler(ctx, op, x):
        return ctx.op("Add", [x, x])

    @registry.register(PythonBranch)
    def branch(ctx, op, x):
        keep = ctx.op("Greater", [ctx.reduce("ReduceSum", x, None, keepdims=False), ctx.scalar(0.0)])
        return ctx.op("Where", [keep, x, ctx.op("Neg", [x])])

    model = with_custom_layers()
    proto = kerasonnx.convert(model, converters=registry)
    assert any(n.op_type == "Add" for n in proto.graph.node)
    assert kerasonnx.verify(model, proto).passed
    assert not any(n.op_type == "Add" for n in kerasonnx.convert(model).graph.node)  # built-ins unchanged
    x = keras.Input((6,))
    branchy = keras.Model(x, PythonBranch()(x))
    data = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    for sign in (1.0, -1.0):  # both branches, decided at run time
        report = kerasonnx.verify(branchy, kerasonnx.convert(branchy, converters=registry), inputs=[sign * data])
        assert report.passed, report.summary()


def test_user_converter_wins_over_builtin():
    registry = kerasonnx.Registry()

    @registry.register(layers.Dense)
    def dense_times_zero(ctx, op, x):
        y = ctx.op("MatMul", [x, ctx.weight(op.kernel)])
        return ctx.op("Mul", [y, ctx.scalar(0.0)])

    model = mlp()
    proto = kerasonnx.convert(model, converters=registry)
    out = run(proto, {"features": np.ones((2, 8), np.float32)})[0]
    np.testing.assert_array_equal(out, np.zeros((2, 3), np.float32))  # the user's converter ran
    assert not kerasonnx.verify(model, proto).passed


def test_converter_bug_names_the_layer():
    registry = kerasonnx.Registry()

    @registry.register(layers.Dense)
    def broken(ctx, op, x):
        raise RuntimeError("boom")

    with pytest.raises(kerasonnx.ConversionError, match="'hidden' \\(Dense\\).*boom"):
        kerasonnx.convert(mlp(), converters=registry)


def test_not_a_model():
    with pytest.raises(kerasonnx.InvalidInputError):
        kerasonnx.convert(layers.Dense(3))


def test_save_inline_and_external(tmp_path):
    model = mlp()
    proto = kerasonnx.convert(model)
    path = kerasonnx.save(proto, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert kerasonnx.verify(model, onnx.load(path)).passed
    kerasonnx.save(proto, tmp_path / "ext.onnx", external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size >= 8 * 64 * 4  # the hidden kernel moved out
    session = ort.InferenceSession(str(tmp_path / "ext.onnx"), providers=["CPUExecutionProvider"])
    x = np.ones((1, 8), np.float32)
    np.testing.assert_allclose(session.run(None, {"features": x})[0],
                               keras.ops.convert_to_numpy(model(x)), atol=1e-5)
    assert not any(p.name.startswith(".kerasonnx-") for p in tmp_path.iterdir())


def test_save_errors_leave_nothing(tmp_path):
    proto = kerasonnx.convert(mlp())
    with pytest.raises(kerasonnx.OutputWriteError):
        kerasonnx.save(proto, tmp_path / "missing" / "m.onnx")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if not _writable(readonly):  # root ignores permissions
            with pytest.raises(kerasonnx.OutputWriteError):
                kerasonnx.save(proto, readonly / "m.onnx")
            assert list(readonly.iterdir()) == []
    finally:
        readonly.chmod(0o700)
    with pytest.raises(kerasonnx.InvalidInputError):
        kerasonnx.save("not a model", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def _writable(directory):
    probe = directory / ".probe"
    try:
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


def test_load_model_errors(tmp_path):
    with pytest.raises(kerasonnx.ModelLoadError, match="not found"):
        kerasonnx.load_model(tmp_path / "none.keras")
    (tmp_path / "empty.keras").write_bytes(b"")
    with pytest.raises(kerasonnx.ModelLoadError, match="empty"):
        kerasonnx.load_model(tmp_path / "empty.keras")
    (tmp_path / "text.keras").write_text("hello")
    with pytest.raises(kerasonnx.ModelLoadError, match="not a Keras model"):
        kerasonnx.load_model(tmp_path / "text.keras")
    good = tmp_path / "good.keras"
    mlp().save(good)
    (tmp_path / "trunc.keras").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(kerasonnx.ModelLoadError):
        kerasonnx.load_model(tmp_path / "trunc.keras")
    with pytest.raises(kerasonnx.ModelLoadError, match="directory"):
        kerasonnx.load_model(tmp_path)


def test_load_model_unknown_custom_class(tmp_path):
    # A class whose module cannot be imported at load time (some Keras versions import it by path).
    orphan = type("Orphan", (Doubler,), {"__module__": "kerasonnx_no_such_module"})
    x = keras.Input((6,))
    path = tmp_path / "custom.keras"
    keras.Model(x, orphan(name="orphan")(x)).save(path)
    with pytest.raises(kerasonnx.ModelLoadError, match="'Orphan'.*custom_objects"):
        kerasonnx.load_model(path)
    model = kerasonnx.load_model(path, custom_objects={"Orphan": orphan})
    assert type(model.get_layer("orphan")) is orphan


def test_verify_report_contents():
    model = mlp()
    report = kerasonnx.verify(model, kerasonnx.convert(model), batch_sizes=(1, 4))
    assert {c.batch_size for c in report.checks} == {1, 4}
    assert set(report.per_output()) == {"probs"}
    assert report.passed and report.max_abs < 1e-5
    assert "passed" in report.summary()


def test_mixed_precision_layers_get_keras_input_casts():
    x = keras.Input((8,), name="x")
    h = layers.Dense(16, activation="relu", dtype="mixed_float16")(x)
    y = layers.Dense(3, dtype="float32")(h)
    model = keras.Model(x, y)
    proto = kerasonnx.convert(model)
    onnx.checker.check_model(proto, full_check=True)
    assert sum(n.op_type == "Cast" for n in proto.graph.node) == 2  # to float16, back to float32
    report = kerasonnx.verify(model, proto, atol=1e-2, rtol=1e-2)
    assert report.passed, report.summary()


class TinyClassifier(keras.Model):
    """A subclassed model: no functional graph, only call()."""

    def __init__(self):
        super().__init__()
        self.hidden = layers.Dense(8, activation="relu")
        self.norm = layers.LayerNormalization()
        self.out = layers.Dense(3)

    def call(self, x, training=False):
        h = self.norm(self.hidden(x))
        return self.out(h + keras.ops.mean(x, axis=-1, keepdims=True))


def test_subclassed_model_with_signature():
    model = TinyClassifier()
    model(np.zeros((1, 5), "float32"))
    proto = kerasonnx.convert(model, input_signature=[(None, 5)], input_names=["features"])
    assert [i.name for i in proto.graph.input] == ["features"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    report = kerasonnx.verify(model, proto)
    assert report.passed, report.summary()


def test_subclassed_model_uses_its_built_shapes():
    model = TinyClassifier()
    model.build((None, 7))
    proto = kerasonnx.convert(model)
    assert proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 7
    assert kerasonnx.verify(model, proto).passed


def test_subclassed_model_without_shapes_is_refused():
    with pytest.raises(kerasonnx.InvalidInputError, match="input_signature"):
        kerasonnx.convert(TinyClassifier())


def test_lambda_layers_convert_by_tracing(tmp_path):
    x = keras.Input((5,), name="x")
    y = layers.Lambda(lambda t: t * t + 1.0, name="square_plus_one")(layers.Dense(5)(x))
    model = keras.Model(x, y)
    proto = kerasonnx.convert(model)
    assert any(n.name.startswith("square_plus_one/") for n in proto.graph.node)
    assert kerasonnx.verify(model, proto).passed
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(kerasonnx.ModelLoadError, match="safe_mode=False"):
        kerasonnx.load_model(path)
    loaded = kerasonnx.load_model(path, safe_mode=False)
    assert kerasonnx.verify(loaded, kerasonnx.convert(loaded)).passed


def test_traced_layer_variables_become_named_initializers():
    class Scale(layers.Layer):
        def build(self, shape):
            self.gamma = self.add_weight(shape=(shape[-1],), initializer="random_normal", name="gamma")

        def call(self, x):
            return x * self.gamma + self.gamma

    x = keras.Input((4,))
    model = keras.Model(x, Scale(name="scale")(x))
    proto = kerasonnx.convert(model)
    names = [i.name for i in proto.graph.initializer]
    assert names.count("scale/gamma") == 1, names  # one initializer, used twice
    assert kerasonnx.verify(model, proto).passed
