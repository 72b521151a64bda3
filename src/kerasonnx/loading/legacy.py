"""Keras 2 models (tf.keras 2.x / tf_keras files and in-memory objects) rebuilt as Keras 3 models.

The model config (JSON from an ``.h5`` file's ``model_config`` attribute, a tf_keras ``.keras`` zip's
``config.json``, or a live model's ``to_json()``) is translated to Keras 3 here, in one place: each
difference between the two config formats is one small rule in ``RULES``. The Keras 3 model is built
from the translated config with the public ``keras.saving.deserialize_keras_object`` (``safe_mode``
honoured: Lambda code runs only with ``safe_mode=False``), then the weights are loaded in Keras 2's
order: ``model.load_weights`` for files (Keras 3 reads Keras 2's ``.h5`` layout and the tf_keras
``.weights.h5`` layout), variable by variable for in-memory models. No TensorFlow is needed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from ..core.errors import ModelLoadError
from . import tfop_lambda

_MODEL_CLASSES = {"Functional", "Model", "Sequential"}
# how Keras 3 itself names its model classes in a serialised config: (module, registered_name)
_KERAS3_MODEL_MODULES = {"Functional": ("keras.src.models.functional", "Functional"),
                         "Sequential": ("keras", None)}
_RNN_CLASSES = {"LSTM", "GRU", "SimpleRNN", "RNN", "CuDNNLSTM", "CuDNNGRU"}
_WRAPPED_KEYS = ("layer", "backward_layer", "cell")
_TENSOR_REF = 3  # [layer_name, node_index, tensor_index]
_CONSTANT_VALUE = "_CONSTANT_VALUE"
_LAYER_MODULES = ("tf_keras", "keras.layers", "keras.src", "keras.engine")
_WRAPPER_KEYS = ("module", "registered_name", "build_config", "compile_config", "shared_object_id")


# ---------------------------------------------------------------------------------------------------
# Which Keras wrote it


def keras2_version(path: Path, kind: str) -> str | None:
    """The Keras version that wrote ``path`` when it is Keras 1 or 2 (``"2.21.0"``), else None."""
    version = _h5_keras_version(path) if kind == "h5" else _zip_keras_version(path) if kind == "keras" else None
    return version if version and version.split(".")[0] in {"1", "2"} else None


def _h5_keras_version(path: Path) -> str | None:
    import h5py

    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            return None
        return _text(f.attrs.get("keras_version", "2"))


def _zip_keras_version(path: Path) -> str | None:
    with zipfile.ZipFile(path) as archive:
        if "metadata.json" not in archive.namelist():
            return None
        return str(json.loads(archive.read("metadata.json")).get("keras_version", ""))


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def is_keras2_model(model) -> bool:
    """True for a tf_keras / Keras 2 model object (whatever ``tf.keras`` resolves to)."""
    return any(cls.__module__.startswith(("tf_keras.", "keras.src.engine.", "keras.engine."))
               for cls in type(model).__mro__)


# ---------------------------------------------------------------------------------------------------
# Entry points


def load_keras2_file(path: Path, kind: str, *, custom_objects=None, safe_mode: bool = True):
    """Build the Keras 3 model stored in a Keras 2 ``.h5`` or tf_keras ``.keras`` file."""
    config = _read_h5_config(path) if kind == "h5" else _read_zip_config(path)
    model = build_model(config, custom_objects=custom_objects, safe_mode=safe_mode)
    with tempfile.TemporaryDirectory(prefix="kerasonnx-legacy-") as tmp:
        weights = Path(tmp) / ("model.h5" if kind == "h5" else "model.weights.h5")
        if kind == "h5":
            shutil.copyfile(path, weights)  # load_weights dispatches on the file name
        else:
            with zipfile.ZipFile(path) as archive, open(weights, "wb") as out:
                out.write(archive.read("model.weights.h5"))
        model.load_weights(weights)
    return model


def as_keras3(model):
    """``model`` itself when it is a Keras 3 model; a Keras 3 copy (same weights) of a Keras 2 one."""
    if not is_keras2_model(model):
        return model
    try:
        config = _decode(model.to_json())
    except Exception as exc:  # noqa: BLE001 - tf_keras raises many types for unserialisable layers
        raise ModelLoadError(f"cannot rebuild the tf_keras model '{model.name}' as Keras 3: its config "
                             f"cannot be serialised ({type(exc).__name__}: {str(exc)[:200]})") from exc
    # the code of a Lambda in a live model is the user's own: rebuilding it runs nothing new
    rebuilt = build_model(config, safe_mode=False)
    assign_legacy_weights(rebuilt, [_legacy_values(layer) for layer in model.layers])
    return rebuilt


def build_model(config: dict, *, custom_objects=None, safe_mode: bool = True):
    """Keras 3 model from a decoded Keras 2 model config."""
    import keras

    translated = translate(config)
    objects = {**tfop_lambda.CUSTOM_OBJECTS, **(custom_objects or {})}
    return keras.saving.deserialize_keras_object(translated, custom_objects=objects, safe_mode=safe_mode)


def assign_legacy_weights(model, values: list[list]) -> None:
    """Keras 2's topological weight order: one list per layer, layers without weights skipped."""
    targets = [_legacy_variables(layer) for layer in model.layers]
    targets = [t for t in targets if t]
    values = [v for v in values if len(v)]
    if len(targets) != len(values):
        raise ModelLoadError(f"weight mismatch: the rebuilt model has {len(targets)} layers with weights, "
                             f"the Keras 2 model {len(values)}")
    for variables, arrays in zip(targets, values):
        if [tuple(v.shape) for v in variables] != [tuple(a.shape) for a in arrays]:
            raise ModelLoadError(f"weight mismatch in layer '{variables[0].path.split('/')[0]}': "
                                 f"{[tuple(v.shape) for v in variables]} vs {[a.shape for a in arrays]}")
        for variable, array in zip(variables, arrays):
            variable.assign(array)


def _legacy_variables(layer) -> list:
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def _legacy_values(layer) -> list:
    return [v.numpy() for v in _legacy_variables(layer)]


# ---------------------------------------------------------------------------------------------------
# Reading configs


def _read_h5_config(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        return _decode(_text(f.attrs["model_config"]))


def _read_zip_config(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return _decode(archive.read("config.json").decode("utf-8"))


def _decode(text: str) -> dict:
    """Keras 2's JSON: tuples are ``{"class_name": "__tuple__", "items": [...]}``."""
    def hook(obj):
        return tuple(obj["items"]) if obj.get("class_name") == "__tuple__" else obj
    return json.loads(text, object_hook=hook)


# ---------------------------------------------------------------------------------------------------
# The translation: one rule per difference between Keras 2 and Keras 3 configs

Rule = Callable[[dict], dict]
RULES: list[Rule] = []  # applied to each object after its children were translated
PARENT_RULES: list[Rule] = []  # applied before the children: rules that read children as Keras 2 wrote them


def _rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def _parent_rule(fn: Rule) -> Rule:
    PARENT_RULES.append(fn)
    return fn


def translate(config: dict) -> dict:
    """A Keras 2 model config -> a Keras 3 config for ``keras.saving.deserialize_keras_object``."""
    if config.get("class_name") not in _MODEL_CLASSES:
        raise ModelLoadError(f"the file holds a '{config.get('class_name')}', not a Keras model")
    unsupported = sorted({f"tf.{layer['config'].get('function')}" for layer in _walk_layers(config)
                          if layer["class_name"] in {"TFOpLambda", "SlicingOpLambda"}
                          and layer["config"].get("function") not in tfop_lambda.TF_OPS})
    if unsupported:
        raise ModelLoadError(f"the model calls TensorFlow functions kerasonnx has no keras.ops equivalent for: "
                             f"{', '.join(unsupported)} (supported: see docs/legacy.md)")
    model = translate_object(config)
    module, registered = _KERAS3_MODEL_MODULES[model["class_name"]]
    return {"module": module, "class_name": model["class_name"], "config": model["config"],
            "registered_name": registered}


def translate_object(obj):
    """Apply every rule to each ``{"class_name", "config"}`` object (``PARENT_RULES`` before its
    children are translated, ``RULES`` after)."""
    if isinstance(obj, list):
        return [translate_object(item) for item in obj]
    if not isinstance(obj, dict):
        return obj
    translatable = "class_name" in obj and isinstance(obj.get("config"), dict)
    for rule in PARENT_RULES if translatable else []:
        obj = rule(obj)
    obj = {key: translate_object(value) for key, value in obj.items()}
    for rule in RULES if translatable else []:
        obj = rule(obj)
    return obj


def _walk_layers(config: dict):
    """Every layer config, nested models included."""
    for layer in config.get("config", {}).get("layers", []) if isinstance(config.get("config"), dict) else []:
        yield layer
        if layer.get("class_name") in _MODEL_CLASSES:
            yield from _walk_layers(layer)


def _with_config(obj: dict, **changes) -> dict:
    return {**obj, "config": {**obj["config"], **changes}}


def _without(obj: dict, *keys: str) -> dict:
    return {**obj, "config": {k: v for k, v in obj["config"].items() if k not in keys}}


@_rule
def model_class(obj: dict) -> dict:
    """tf_keras' ``Functional``/``Model`` (module ``tf_keras.src.engine.functional``) -> Keras 3 ``Functional``."""
    if obj["class_name"] == "Model" and "layers" in obj["config"]:
        return {**obj, "class_name": "Functional"}
    return obj


@_rule
def layer_module_paths(obj: dict) -> dict:
    """Drop tf_keras' ``module``/``registered_name``/``build_config`` from layers and models:
    Keras 3 resolves them by class name (``tf_keras.src...`` modules do not exist in Keras 3)."""
    module = str(obj.get("module") or "")
    if "inbound_nodes" in obj or "layers" in obj["config"] or module.startswith(_LAYER_MODULES):
        return {k: v for k, v in obj.items() if k not in _WRAPPER_KEYS}
    return obj


@_rule
def wrapped_layer_module(obj: dict) -> dict:
    """Bidirectional/TimeDistributed/RNN deserialise their inner layer (``layer``, ``backward_layer``,
    ``cell``) with Keras 3's new-style loader, which needs ``module: keras.layers`` on it."""
    keys = [k for k in _WRAPPED_KEYS if isinstance(obj["config"].get(k), dict)]
    if not keys:
        return obj
    return _with_config(obj, **{k: _keras_layer_module(obj["config"][k]) for k in keys})


def _keras_layer_module(inner: dict) -> dict:
    import keras

    if "module" in inner or not hasattr(keras.layers, inner.get("class_name", "")):
        return inner
    return {"module": "keras.layers", **inner, "registered_name": None}


@_rule
def input_layer_batch_shape(obj: dict) -> dict:
    """``InputLayer(batch_input_shape=...)`` -> ``InputLayer(batch_shape=...)``."""
    if obj["class_name"] != "InputLayer" or "batch_input_shape" not in obj["config"]:
        return obj
    shape = obj["config"]["batch_input_shape"]
    return _with_config(_without(obj, "batch_input_shape"), batch_shape=list(shape))


@_parent_rule
def sequential_first_layer_shape(obj: dict) -> dict:
    """A Sequential whose first layer carries ``batch_input_shape`` gets an explicit ``InputLayer``."""
    if obj["class_name"] != "Sequential":
        return obj
    layers = list(obj["config"].get("layers", []))
    if not layers or layers[0].get("class_name") == "InputLayer" or "batch_input_shape" not in layers[0]["config"]:
        return obj
    first = layers[0]["config"]
    input_layer = {"class_name": "InputLayer",
                   "config": {"batch_shape": list(first["batch_input_shape"]), "dtype": first.get("dtype"),
                              "name": f"{first.get('name', 'layer')}_input"}}
    layers[0] = _without(layers[0], "batch_input_shape")
    return _with_config(obj, layers=[input_layer, *layers])


@_rule
def layer_batch_input_shape(obj: dict) -> dict:
    """``batch_input_shape`` on any other layer is dropped (Keras 3 layers take no input shape)."""
    if obj["class_name"] == "InputLayer" or "batch_input_shape" not in obj["config"]:
        return obj
    return _without(obj, "batch_input_shape")


@_rule
def rnn_time_major(obj: dict) -> dict:
    """LSTM/GRU/SimpleRNN/RNN ``time_major`` is gone in Keras 3 (only ``False`` can be translated)."""
    if obj["class_name"] not in _RNN_CLASSES or "time_major" not in obj["config"]:
        return obj
    if obj["config"]["time_major"]:
        raise ModelLoadError(f"layer '{obj['config'].get('name')}' ({obj['class_name']}) uses time_major=True, "
                             "which Keras 3 does not support")
    return _without(obj, "time_major")


@_rule
def depthwise_groups(obj: dict) -> dict:
    """DepthwiseConv1D/2D ``groups`` (always 1 in Keras 2) is not a Keras 3 argument."""
    if obj["class_name"] not in {"DepthwiseConv1D", "DepthwiseConv2D"}:
        return obj
    return _without(obj, "groups")


@_rule
def dtype_policy(obj: dict) -> dict:
    """A mixed-precision ``{"class_name": "Policy", "config": {"name": ...}}`` dtype -> its name string."""
    dtype = obj["config"].get("dtype")
    if isinstance(dtype, dict) and dtype.get("class_name") in {"Policy", "DTypePolicy"}:
        return _with_config(obj, dtype=dtype["config"]["name"])
    return obj


@_rule
def batchnorm_axis(obj: dict) -> dict:
    """BatchNormalization ``axis`` saved as a one-element list -> an int; TF-only ``fused`` etc. dropped."""
    if obj["class_name"] != "BatchNormalization":
        return obj
    axis = obj["config"].get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise ModelLoadError(f"BatchNormalization '{obj['config'].get('name')}' normalises over several "
                                 f"axes {list(axis)}, which Keras 3 does not support")
        axis = axis[0]
    return _with_config(_without(obj, "fused", "virtual_batch_size", "adjustment"), axis=int(axis))


@_rule
def embedding_input_length(obj: dict) -> dict:
    """Embedding ``input_length`` is not a Keras 3 argument."""
    if obj["class_name"] != "Embedding":
        return obj
    return _without(obj, "input_length")


@_rule
def lambda_function(obj: dict) -> dict:
    """A Lambda's ``function`` as ``[code, defaults, closure]`` -> Keras 3's ``__lambda__`` object
    (still refused by Keras unless ``safe_mode=False``); Keras 2-only bookkeeping keys dropped."""
    if obj["class_name"] != "Lambda":
        return obj
    config = dict(obj["config"])
    for key, kind in (("function", "function_type"), ("output_shape", "output_shape_type")):
        if config.get(kind) == "lambda" and isinstance(config.get(key), (list, tuple)):
            code, defaults, closure = config[key]
            config[key] = {"class_name": "__lambda__",
                           "config": {"code": code, "defaults": defaults, "closure": closure}}
    for key in ("function_type", "module", "output_shape_type", "output_shape_module"):
        config.pop(key, None)
    return {**obj, "config": config}


@_rule
def tf_op_lambda(obj: dict) -> dict:
    """TFOpLambda / SlicingOpLambda (TensorFlow functions called on KerasTensors) -> kerasonnx layers
    calling the equivalent ``keras.ops`` (see ``tfop_lambda.TF_OPS``)."""
    if obj["class_name"] not in {"TFOpLambda", "SlicingOpLambda"}:
        return obj
    return {**obj, "class_name": tfop_lambda.registered_name(obj["class_name"])}


@_rule
def functional_nodes(obj: dict) -> dict:
    """Keras 2 inbound nodes (``[[layer, node, tensor, kwargs], ...]``, TFOpLambda keeping its first
    argument's structure, ``_CONSTANT_VALUE`` entries, slices as dicts) -> Keras 3 ``{"args", "kwargs"}``."""
    layers = obj["config"].get("layers")
    if obj["class_name"] not in {"Functional", "Model"} or not isinstance(layers, list):
        return obj
    names = {layer["name"]: _node_offset(layer) for layer in layers}
    return _with_config(obj, layers=[_translate_layer_nodes(layer, names) for layer in layers],
                        input_layers=_shift_refs(obj["config"].get("input_layers", []), names),
                        output_layers=_shift_refs(obj["config"].get("output_layers", []), names))


def _node_offset(layer: dict) -> int:
    """Keras 2 numbers the calls of a nested Sequential that has an input after its own built-in
    node (first call = node 1); a Keras 3 Sequential has no built-in node (first call = node 0)."""
    if layer.get("class_name") != "Sequential":
        return 0
    inner = layer["config"].get("layers", [])
    return int(bool(inner) and inner[0].get("class_name") == "InputLayer")


def _shift_refs(refs, names: dict[str, int]):
    if _is_leaf(refs) and refs[0] in names:
        return [refs[0], refs[1] - names[refs[0]], *refs[2:]]
    return [_shift_refs(item, names) for item in refs] if isinstance(refs, (list, tuple)) else refs


def _translate_layer_nodes(layer: dict, names: dict[str, int]) -> dict:
    structured = tfop_lambda.is_tf_op_layer(layer["class_name"])
    nodes = [_translate_node(node, names, structured) for node in layer.get("inbound_nodes", [])]
    return {**layer, "inbound_nodes": nodes}


def _translate_node(node, names: dict[str, int], structured: bool):
    if isinstance(node, dict):  # already Keras 3 format
        return node
    node = _shift_refs(node, names)
    leaves = _leaves(node)
    kwargs = next((leaf[3] for leaf in leaves if len(leaf) == 4), {})
    if structured:
        first = _map_leaves(node, names)
    else:
        tensors = [_leaf_value(leaf, names) for leaf in leaves]
        first = tensors[0] if len(tensors) == 1 else tensors
    return {"args": [first], "kwargs": _serialize_arguments(_shift_refs(kwargs, names), names)}


def _is_leaf(item) -> bool:
    return (isinstance(item, (list, tuple)) and len(item) in (3, 4) and isinstance(item[0], str)
            and isinstance(item[1], int) and (isinstance(item[2], int) or item[0] == _CONSTANT_VALUE))


def _leaves(node) -> list:
    if _is_leaf(node):
        return [node]
    return [leaf for item in node for leaf in _leaves(item)] if isinstance(node, (list, tuple)) else []


def _map_leaves(node, names):
    if _is_leaf(node):
        return _leaf_value(node, names)
    return [_map_leaves(item, names) for item in node]


def _leaf_value(leaf, names):
    if leaf[0] == _CONSTANT_VALUE:
        return _serialize_arguments(leaf[2], names)
    return _tensor_ref(leaf)


def _tensor_ref(leaf) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [], "dtype": "float32", "keras_history": [leaf[0], leaf[1], leaf[2]]}}


def _serialize_arguments(value, names: dict[str, int]):
    """Call arguments: tensor references, slices and Ellipsis in Keras 3's serialised form."""
    if _is_leaf(value) and len(value) == _TENSOR_REF and value[0] in names:
        return _tensor_ref(value)
    if isinstance(value, (list, tuple)):
        return [_serialize_arguments(item, names) for item in value]
    if isinstance(value, dict):
        if set(value) == {"start", "stop", "step"}:
            return {"class_name": "__slice__", "config": value}
        if value.get("class_name") == "__ellipsis__":
            return {"class_name": "__ellipsis__", "config": {}}
        return {key: _serialize_arguments(item, names) for key, item in value.items()}
    return value
