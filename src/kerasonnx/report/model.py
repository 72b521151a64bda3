"""What a conversion report holds, collected from the ONNX graph and the conversion records.

The records (``api.Conversion.records``) say how each Keras layer was converted and how many ONNX
nodes it emitted *before* the optimisation passes; the final graph's node names start with the
layer's path (``block_1/attention/dense/MatMul``), which maps every surviving node to its layer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir

OTHER = "(other)"  # nodes no layer claims: passes' leftovers, or graphs converted without records
STAGES = ("load", "convert", "optimize", "verify", "save")


@dataclass
class TensorInfo:
    """A graph input or output; ``dims`` holds ints (static) and names or "?" (dynamic)."""

    name: str
    dtype: str
    dims: tuple

    @property
    def dynamic(self) -> list[str]:
        return [d for d in self.dims if isinstance(d, str)]


@dataclass
class LayerRow:
    """One Keras layer/op (all its calls) and what it became; ``children`` are the ops and layers
    of a traced layer or nested model. ``ops`` counts the final graph's nodes of the row and its
    children by op type; ``emitted`` the nodes emitted before the optimisation passes."""

    path: str
    class_name: str
    how: str
    emitted: int
    depth: int
    calls: int = 1
    ops: Counter = field(default_factory=Counter)
    children: list["LayerRow"] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def final_nodes(self) -> int:
        return sum(self.ops.values())

    def walk(self):
        """This row and its descendants, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class Structure:
    """The graph at layer granularity: ``boxes`` (id -> (label, detail, kind, ONNX node count)) in
    topological order, ``edges`` between box ids. Inputs and outputs are boxes of kind
    "input"/"output"; nodes no layer claims are boxes of kind "other"."""

    boxes: dict[str, tuple[str, str, str, int]]
    edges: list[tuple[str, str]]


@dataclass
class Report:
    """Everything a conversion report shows. Render with :func:`kerasonnx.report.write`."""

    title: str
    source: str | None
    opset: int
    producer: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    node_count: int
    subgraph_nodes: int
    op_histogram: list[tuple[str, int]]
    weights_bytes: int
    file_size: int | None
    layers: list[LayerRow]
    other_ops: Counter
    structure: Structure
    verification: object | None = None  # a kerasonnx.verification.VerifyReport
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    how_counts: dict[str, int] = field(default_factory=dict)

    @property
    def layer_count(self) -> int:
        return len(self.layers)


def build_report(result, *, source=None, verification=None, seconds=None, warnings=(), file_size=None,
                 title=None) -> Report:
    """Collect a report from ``result``: an ``api.Conversion`` (with layer records) or an ONNX model
    (``onnx.ModelProto``/``onnx_ir.Model``, e.g. from tf2onnx: no layer table then).

    ``verification``: a ``VerifyReport``; ``seconds``: stage timings merged over the conversion's
    own; ``file_size``: bytes of the saved file (and its external data).
    """
    records = list(getattr(result, "records", None) or [])
    model = getattr(result, "ir_model", result)
    if isinstance(model, onnx.ModelProto):
        model = ir.from_proto(model)
    if not isinstance(model, ir.Model):
        raise TypeError(f"build_report expects a Conversion or an ONNX model, got {type(result).__name__}")
    graph = model.graph
    nodes = list(graph)
    layers = _layer_rows(records)
    owner = _owners(nodes, {row.path: row for root in layers for row in root.walk()})
    other_ops: Counter = Counter()
    for node in nodes:
        row = owner.get(node.name)
        if row is None:
            other_ops[node.op_type] += 1
    _count_ops(layers, nodes, owner)
    timings = dict(getattr(result, "seconds", None) or {})
    timings.update(seconds or {})
    return Report(
        title=title or graph.name or "model", source=None if source is None else str(source),
        opset=graph.opset_imports.get("", 0), producer=f"{model.producer_name or '?'} {model.producer_version or ''}".strip(),
        inputs=[_tensor_info(v) for v in graph.inputs], outputs=[_tensor_info(v) for v in graph.outputs],
        node_count=len(nodes), subgraph_nodes=sum(1 for _ in graph.all_nodes()) - len(nodes),
        op_histogram=Counter(n.op_type for n in nodes).most_common(),
        weights_bytes=sum(_nbytes(v) for v in graph.initializers.values()), file_size=file_size,
        layers=layers, other_ops=other_ops, structure=_structure(graph, nodes, owner, layers),
        verification=verification, seconds=_ordered(timings), warnings=list(warnings),
        how_counts=dict(Counter(row.how for row in layers)),
    )


def _layer_rows(records) -> list[LayerRow]:
    """Rows of the depth-0 layers, each with its traced/nested children; repeated calls of a shared
    layer are one row."""
    by_path: dict[str, LayerRow] = {}
    roots: list[LayerRow] = []
    # records list children before their traced/nested parent: visit parents first
    for record in sorted(records, key=lambda r: r.depth):
        row = by_path.get(record.path)
        if row is not None:
            row.calls += 1
            row.emitted += record.nodes
            continue
        row = by_path[record.path] = LayerRow(record.path, record.class_name, record.how, record.nodes,
                                              record.depth)
        parent = by_path.get(record.path.rsplit("/", 1)[0]) if "/" in record.path else None
        (parent.children if parent is not None else roots).append(row)
    order = {r.path: i for i, r in enumerate(records)}
    _sort_by_first_parent(roots, order)
    return roots


def _sort_by_first_parent(rows: list[LayerRow], order: dict[str, int]) -> None:
    rows.sort(key=lambda r: order[r.path])
    for row in rows:
        _sort_by_first_parent(row.children, order)


def _owners(nodes, rows: dict[str, LayerRow]) -> dict[str, LayerRow]:
    """Final node name -> the most specific row whose path prefixes it."""
    owner = {}
    for node in nodes:
        row = _longest_prefix(node.name, rows)
        if row is None and node.outputs:  # a node a pass created may name its output after the layer
            row = _longest_prefix(node.outputs[0].name, rows, whole=True)
        if row is not None:
            owner[node.name] = row
    return owner


def _longest_prefix(name: str | None, rows: dict[str, LayerRow], whole: bool = False) -> LayerRow | None:
    """The row whose path is the longest ``/``-separated prefix of ``name`` (or ``name`` itself)."""
    parts = (name or "").split("/")
    for end in range(len(parts) if whole else len(parts) - 1, 0, -1):
        row = rows.get("/".join(parts[:end]))
        if row is not None:
            return row
    return None


def _count_ops(roots: list[LayerRow], nodes, owner: dict[str, LayerRow]) -> None:
    parents = {}
    for root in roots:
        for row in root.walk():
            for child in row.children:
                parents[id(child)] = row
    for node in nodes:
        row = owner.get(node.name)
        while row is not None:
            row.ops[node.op_type] += 1
            row = parents.get(id(row))


def _root_of(path: str, roots: dict[str, LayerRow]) -> str | None:
    """The depth-0 row path that ``path`` belongs to."""
    parts = path.split("/")
    for end in range(1, len(parts) + 1):
        prefix = "/".join(parts[:end])
        if prefix in roots:
            return prefix
    return None


def _structure(graph: ir.Graph, nodes, owner: dict[str, LayerRow], layers: list[LayerRow]) -> Structure:
    """The final graph grouped by depth-0 layer (by ONNX node when there are no records)."""
    roots = {row.path: row for row in layers}
    boxes: dict[str, tuple[str, str, str, int]] = {}
    group_of: dict[int, str] = {}  # id(node) -> box id
    for node in nodes:
        row = owner.get(node.name)
        key = _root_of(row.path, roots) if row is not None else None
        if key is None:
            key = f"node:{node.name or id(node)}"
            label, detail, kind = node.op_type, "", "other"
        else:
            label, detail, kind = key, roots[key].class_name, roots[key].how
        group_of[id(node)] = key
        count = boxes[key][3] + 1 if key in boxes else 1
        boxes[key] = (label, detail, kind, count)
    edges: dict[tuple[str, str], None] = {}
    inputs = {id(v): f"input:{v.name}" for v in graph.inputs}
    boxes = {**{box: (v.name, _describe(v), "input", 0) for v, box in zip(graph.inputs, inputs.values())},
             **boxes}
    for node in nodes:
        for value in node.inputs:
            if value is None:
                continue
            producer = value.producer()
            source = inputs.get(id(value)) if producer is None else group_of.get(id(producer))
            if source is not None and source != group_of[id(node)]:
                edges[(source, group_of[id(node)])] = None
    for value in graph.outputs:
        box = f"output:{value.name}"
        boxes[box] = (value.name, _describe(value), "output", 0)
        producer = value.producer()
        source = inputs.get(id(value)) if producer is None else group_of.get(id(producer))
        if source is not None:
            edges[(source, box)] = None
    return Structure(boxes, list(edges))


def _describe(value: ir.Value) -> str:
    info = _tensor_info(value)
    return f"{info.dtype} (" + ", ".join(str(d) for d in info.dims) + ")"


def _tensor_info(value: ir.Value) -> TensorInfo:
    dims = tuple(_dim(d) for d in value.shape) if value.shape is not None else ()
    return TensorInfo(value.name, _dtype_name(value.dtype), dims)


def _dim(dim):
    if isinstance(dim, int):
        return dim
    name = getattr(dim, "value", None)
    return name if isinstance(name, str) else "?"


def _dtype_name(dtype) -> str:
    if dtype is None:
        return "?"
    try:
        return str(dtype.numpy())
    except Exception:  # onnx_ir cannot map every type (string, 4-bit...) to numpy
        return dtype.name.lower()


def _nbytes(value: ir.Value) -> int:
    tensor = value.const_value
    return int(getattr(tensor, "nbytes", 0) or 0) if tensor is not None else 0


def _ordered(seconds: dict[str, float]) -> dict[str, float]:
    known = {k: seconds[k] for k in STAGES if k in seconds}
    return {**known, **{k: v for k, v in seconds.items() if k not in known}}


def saved_size(path: Path) -> int:
    """Bytes of an ONNX file and its external data file, if any."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)
