"""The conversion report as GitHub-flavoured markdown."""

from __future__ import annotations

from . import format as fmt
from .model import OTHER, LayerRow, Report


def render_markdown(report: Report) -> str:
    sections = [_summary(report), _io(report), _verification(report), _timings(report), _warnings(report),
                _histogram(report), _layers(report)]
    return "\n\n".join(s for s in sections if s) + "\n"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _summary(report: Report) -> str:
    rows = [["ONNX opset", report.opset], ["ONNX nodes", _node_count(report)],
            ["file size", fmt.size(report.file_size)], ["weights", fmt.size(report.weights_bytes)]]
    if report.source:
        rows.insert(0, ["source", _code(report.source)])
    if report.layers:
        by_how = ", ".join(f"{fmt.HOW_LABELS.get(h, h)}: {n}" for h, n in report.how_counts.items())
        rows.append(["Keras layers", f"{report.layer_count} ({by_how})"])
    if report.verification is not None:
        rows.append(["verification", "passed" if report.verification.passed else "**FAILED**"])
    rows.append(["producer", report.producer])
    return f"# Conversion report: {report.title}\n\n" + _table(["", ""], rows)


def _node_count(report: Report) -> str:
    extra = f" (+{report.subgraph_nodes} in subgraphs)" if report.subgraph_nodes else ""
    return f"{report.node_count}{extra}"


def _io(report: Report) -> str:
    rows = [[kind, _code(t.name), t.dtype, fmt.shape(t.dims), ", ".join(t.dynamic) or "–"]
            for kind, tensors in (("input", report.inputs), ("output", report.outputs)) for t in tensors]
    return "## Inputs and outputs\n\n" + _table(["", "name", "dtype", "shape", "dynamic dims"], rows)


def _verification(report: Report) -> str:
    v = report.verification
    if v is None:
        return ""
    rows = [[_code(name), fmt.error(a), fmt.error(r), "pass" if ok else "**FAIL**"]
            for name, a, r, ok in fmt.verification_rows(v)]
    head = (f"## Verification\n\nonnxruntime against Keras at batch size(s) {fmt.batch_sizes(v)}; an element "
            f"passes when |onnx − keras| ≤ {v.atol:g} + {v.rtol:g} · |keras|.\n\n")
    found = fmt.divergence(v)
    return head + _table(["output", "max abs error", "max rel error", "result"], rows) + \
        (f"\n**{found}**\n" if found else "")


def _timings(report: Report) -> str:
    if not report.seconds:
        return ""
    rows = [[stage, fmt.seconds(s)] for stage, s in report.seconds.items()]
    return "## Timings\n\n" + _table(["stage", "time"], rows)


def _warnings(report: Report) -> str:
    body = "\n".join(f"- {_cell(w)}" for w in report.warnings) or "None."
    return "## Warnings\n\n" + body


def _histogram(report: Report) -> str:
    rows = [[op, n] for op, n in report.op_histogram] + [["**total**", f"**{report.node_count}**"]]
    return "## ONNX op histogram\n\n" + _table(["op", "count"], rows)


def _layers(report: Report) -> str:
    if not report.layers:
        return "## Layers\n\nNo layer records (the model was not converted from a Keras graph by kerasonnx)."
    rows = []
    for index, root in enumerate(report.layers, 1):
        for row in root.walk():
            rows.append(_layer_row(row, index if row is root else "", row.depth - root.depth))
    if report.other_ops:
        rows.append(["", OTHER, "", "", sum(report.other_ops.values()), fmt.ops_summary(report.other_ops)])
    intro = ("Each Keras layer of the model, the ONNX nodes it became in the final graph and how it was "
             "converted. Children (↳) are the layers and `keras.ops` calls inside traced layers and nested "
             "models.\n\n")
    return "## Layers\n\n" + intro + _table(["#", "layer", "class", "how", "ONNX nodes", "ONNX ops"], rows)


def _layer_row(row: LayerRow, index, level: int) -> list:
    indent = "&nbsp;&nbsp;" * 2 * (level - 1) + "↳ " if level else ""
    calls = f" ×{row.calls} calls" if row.calls > 1 else ""
    return [index, indent + _code(row.name if level else row.path) + calls, row.class_name,
            fmt.HOW_LABELS.get(row.how, row.how), fmt.nodes_cell(row.final_nodes, row.emitted),
            fmt.ops_summary(row.ops)]
