"""Generate model inputs with the right dtypes, shapes and value ranges; read user-supplied ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.dtypes import to_numpy_dtype
from ..core.errors import InvalidInputError

SEQUENCE_DIM = 16  # dynamic dims of rank-2/3 inputs (sequence length, features)
IMAGE_DIM = 128  # dynamic spatial dims of rank-4/5 inputs: deep CNNs downsample by 32
# The second size each dynamic non-batch dim is checked at (multiples of 8 / 32 like the first).
ALTERNATE_SEQUENCE_DIM = 24
ALTERNATE_IMAGE_DIM = 96
DEFAULT_INT_RANGE = (0, 10)


def make_inputs(specs, batch_size: int, seed: int = 0, int_range=DEFAULT_INT_RANGE, dim: int | None = None,
                *, int_ranges=None, alternate: bool = False):
    """One array per ``(shape, dtype)`` spec (``None`` or a name = dynamic dim): floats ~ N(0, 1),
    ints uniform in ``int_range`` (or ``int_ranges[i]`` for input ``i`` when given), bools 50/50.

    Dynamic dims are filled with ``dim``, else with :data:`SEQUENCE_DIM` / :data:`IMAGE_DIM` (the
    ``ALTERNATE_*`` sizes with ``alternate=True``); a fixed first dim is kept (static batch).
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for i, (spec_shape, spec_dtype) in enumerate(specs):
        fill = dim or _dynamic_fill(len(spec_shape), alternate)
        shape = [d if isinstance(d, int) else (batch_size if j == 0 else fill) for j, d in enumerate(spec_shape)]
        low, high = (int_ranges[i] if int_ranges and int_ranges[i] else int_range)
        arrays.append(_random_array(rng, shape, to_numpy_dtype(spec_dtype), low, high))
    return arrays


def _dynamic_fill(rank: int, alternate: bool) -> int:
    if rank >= 4:
        return ALTERNATE_IMAGE_DIM if alternate else IMAGE_DIM
    return ALTERNATE_SEQUENCE_DIM if alternate else SEQUENCE_DIM


def _random_array(rng, shape, dtype, low: int, high: int) -> np.ndarray:
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(low, high, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(np.float32).astype(dtype)


def has_dynamic_inner_dims(specs) -> bool:
    """True when some input has a dynamic dim besides the batch dim (sequence length, image size)."""
    return any(not isinstance(d, int) for shape, _ in specs for d in shape[1:])


def static_batch(specs) -> int | None:
    """The fixed batch size of the first input, or None when it is dynamic."""
    if specs and specs[0][0] and isinstance(specs[0][0][0], int):
        return specs[0][0][0]
    return None


_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(bfloat16)": "bfloat16", "tensor(bool)": "bool"}


def onnx_input_specs(session) -> list[tuple]:
    """``(shape, dtype)`` of each onnxruntime session input (symbolic dims as names)."""
    specs = []
    for i in session.get_inputs():
        dtype = _ORT_TYPES.get(i.type) or i.type[len("tensor("):-1]
        specs.append((tuple(d if isinstance(d, int) else None for d in i.shape), dtype))
    return specs


def embedding_int_ranges(model, count: int) -> list[tuple[int, int] | None]:
    """Per model input: ``(0, input_dim)`` when the input feeds an ``Embedding`` (directly, or
    through nested models), else None. For models without a walkable graph (subclassed), every
    input gets the smallest vocabulary of the model's embeddings, if it has any."""
    import keras

    from ..core import walker

    if not walker.has_graph(model):
        dims = [layer.input_dim for layer in _all_layers(model) if isinstance(layer, keras.layers.Embedding)]
        return [(0, min(dims)) if dims else None] * count
    functional = walker.functional_of(model)
    vocab: dict[int, int] = {}
    _collect_vocab(functional, {id(t): i for i, t in enumerate(walker.graph_inputs(functional))}, vocab)
    return [(0, vocab[i]) if i in vocab else None for i in range(count)]


def _collect_vocab(functional, input_index: dict[int, int], vocab: dict[int, int]) -> None:
    """Fill ``vocab[model input index]`` with the smallest ``input_dim`` of the Embeddings it feeds."""
    import keras

    from ..core import walker

    for node in walker.nodes(functional):
        op = node.operation
        fed = [input_index[id(t)] for t in node.input_tensors if id(t) in input_index]
        if not fed:
            continue
        if isinstance(op, keras.layers.Embedding):
            for i in fed:
                vocab[i] = min(vocab.get(i, op.input_dim), op.input_dim)
        elif walker.is_nested_graph(op):
            inner = walker.functional_of(op)
            mapping = {id(inner_t): input_index[id(t)]
                       for inner_t, t in zip(walker.graph_inputs(inner), node.input_tensors) if id(t) in input_index}
            _collect_vocab(inner, mapping, vocab)


def _all_layers(layer) -> list:
    found, stack = [], [layer]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(getattr(current, "layers", None) or [])
    return found


def load_inputs(path, names: list[str]) -> list[np.ndarray]:
    """Arrays from a ``.npy`` (one input) or ``.npz`` file (keys = input names, or positional
    ``arr_0, arr_1, ...`` as ``np.savez(path, a, b)`` writes them), in the order of ``names``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"--inputs: {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InvalidInputError(f"--inputs: cannot read {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise InvalidInputError(f"--inputs: {path} holds one array but the model has {len(names)} inputs "
                                    f"({', '.join(names)}): use a .npz file")
        return [loaded]
    with loaded:
        keys = list(loaded.keys())
        if set(names) <= set(keys):
            return [loaded[n] for n in names]
        positional = [f"arr_{i}" for i in range(len(names))]
        if keys == positional or (len(keys) == len(names) and not set(keys) & set(names)):
            return [loaded[k] for k in keys]
    raise InvalidInputError(f"--inputs: {path} has arrays {keys}; expected the input names {names} "
                            f"or {len(names)} positional array(s)")
