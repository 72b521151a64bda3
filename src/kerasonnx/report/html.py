"""The conversion report as one self-contained HTML page (inline CSS and SVG, no script, no assets)."""

from __future__ import annotations

from html import escape

from . import format as fmt
from .model import OTHER, LayerRow, Report
from .svg import COLOURS, render_svg

CSS = """
:root { --ink:#202124; --muted:#5f6368; --line:#e3e6ea; --zebra:#f7f8fa; --accent:#1a73e8;
        --ok:#188038; --ok-bg:#e6f4ea; --bad:#c5221f; --bad-bg:#fce8e6; }
* { box-sizing: border-box; }
body { margin:0; background:#f3f4f6; color:var(--ink);
       font:14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif; }
main { max-width:1120px; margin:0 auto; padding:28px 24px 48px; }
header { background:linear-gradient(120deg,#1a3a6b,#2f6fd0); color:#fff; border-radius:14px;
         padding:22px 26px; margin-bottom:18px; }
header .kicker { font-size:12px; letter-spacing:.08em; text-transform:uppercase; opacity:.8; }
header h1 { margin:4px 0 6px; font-size:26px; font-weight:650; word-break:break-all; }
header .meta { font-size:13px; opacity:.9; }
header code { color:#fff; background:rgba(255,255,255,.15); }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px; margin-bottom:18px; }
.card { background:#fff; border:1px solid var(--line); border-radius:12px; padding:12px 16px; }
.card .value { font-size:22px; font-weight:650; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.05em; }
section { background:#fff; border:1px solid var(--line); border-radius:12px; padding:16px 20px;
          margin-bottom:18px; }
.row { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
.row > section { margin-bottom:18px; }
@media (max-width: 800px) { .row { grid-template-columns:1fr; } }
h2 { font-size:16px; margin:0 0 10px; font-weight:650; }
p.note { color:var(--muted); margin:0 0 10px; font-size:13px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th { text-align:left; font-weight:600; color:var(--muted); border-bottom:2px solid var(--line);
     padding:6px 8px; font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
td { padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
table:not(.layers) > tbody > tr:nth-child(even) > td, table.layers > tbody > tr.zebra > td { background:var(--zebra); }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
code { font:12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, "DejaVu Sans Mono", monospace;
       background:#f1f3f4; border-radius:4px; padding:1px 5px; }
.muted { color:var(--muted); }
.badge { display:inline-block; border-radius:999px; padding:1px 9px; font-size:11.5px; font-weight:600;
         white-space:nowrap; border:1px solid transparent; }
.pass { color:var(--ok); background:var(--ok-bg); }
.fail { color:var(--bad); background:var(--bad-bg); }
header .badge { font-size:13px; padding:3px 12px; margin-left:8px; vertical-align:middle; }
.bar { height:8px; border-radius:4px; background:#8ab4f8; min-width:2px; }
td.barcell { width:45%; vertical-align:middle; }
ul.warnings { margin:0; padding-left:20px; }
ul.warnings li { margin:3px 0; }
.graph-box { overflow:auto; border:1px solid var(--line); border-radius:10px;
             background:#fcfcfd; padding:6px; text-align:center; }
svg.graph { max-width:100%; height:auto; font-family:system-ui, "DejaVu Sans", sans-serif; }
.legend { margin-top:8px; display:flex; flex-wrap:wrap; gap:6px; }
details summary { cursor:pointer; color:var(--accent); font-size:12.5px; }
table.inner { margin:6px 0 4px; }
table.inner td { border-bottom:1px dashed var(--line); }
td.path code { background:none; padding:0; }
.indent { display:inline-block; }
"""


def render_html(report: Report) -> str:
    body = "".join([_header(report), _cards(report), _io(report),
                    _row(_verification(report), _timings(report)), _row(_histogram(report), _warnings(report)),
                    _graph(report), _layers(report)])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>kerasonnx report: {escape(report.title)}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def _row(*sections: str) -> str:
    present = [s for s in sections if s]
    return f'<div class="row">{"".join(present)}</div>' if len(present) > 1 else "".join(present)


def _section(title: str, content: str, note: str = "", id_: str = "") -> str:
    anchor = f' id="{id_}"' if id_ else ""
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f"<section{anchor}><h2>{escape(title)}</h2>{note_html}{content}</section>"


def _table(header: list[str], rows: list[str], numeric: set[int] = frozenset(), cls: str = "") -> str:
    head = "".join(f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(header))
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _tr(cells: list[str], numeric: set[int] = frozenset(), cls: str = "") -> str:
    tds = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells))
    return f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>"


def _badge(text: str, cls: str = "", kind: str = "") -> str:
    style = ""
    if kind:
        fill, stroke = COLOURS.get(kind, COLOURS["other"])
        style = f' style="background:{fill};border-color:{stroke};color:{_darker(stroke)}"'
    return f'<span class="badge {cls}"{style}>{escape(text)}</span>'


def _darker(colour: str) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"#{int(r * .7):02x}{int(g * .7):02x}{int(b * .7):02x}"


def _verdict(report: Report) -> str:
    if report.verification is None:
        return ""
    passed = report.verification.passed
    return _badge("verified" if passed else "verification failed", "pass" if passed else "fail")


def _header(report: Report) -> str:
    meta = [f"opset {report.opset}", escape(report.producer)]
    if report.source:
        meta.insert(0, f"<code>{escape(report.source)}</code>")
    return (f'<header><div class="kicker">kerasonnx conversion report</div>'
            f'<h1>{escape(report.title)}{_verdict(report)}</h1>'
            f'<div class="meta">{" · ".join(meta)}</div></header>')


def _cards(report: Report) -> str:
    cards = [("ONNX nodes", str(report.node_count)), ("Keras layers", str(report.layer_count) if report.layers else "–"),
             ("file size", fmt.size(report.file_size)), ("weights", fmt.size(report.weights_bytes)),
             ("opset", str(report.opset))]
    if report.seconds:
        cards.append(("total time", fmt.seconds(sum(report.seconds.values()))))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="value">{escape(v)}</div><div class="label">{escape(k)}</div></div>'
        for k, v in cards) + "</div>"


def _dims(dims: tuple) -> str:
    return "(" + ", ".join(f'<span class="muted"><i>{escape(d)}</i></span>' if isinstance(d, str) else str(d)
                           for d in dims) + ")"


def _io(report: Report) -> str:
    rows = [_tr([kind, f"<code>{escape(t.name)}</code>", escape(t.dtype), _dims(t.dims),
                 escape(", ".join(t.dynamic)) or '<span class="muted">static</span>'])
            for kind, tensors in (("input", report.inputs), ("output", report.outputs)) for t in tensors]
    return _section("Inputs and outputs", _table(["", "name", "dtype", "shape", "dynamic dims"], rows),
                    "Dynamic dimensions are in italics; they take any size at run time.")


def _verification(report: Report) -> str:
    v = report.verification
    if v is None:
        return ""
    rows = [_tr([f"<code>{escape(name)}</code>", fmt.error(a), fmt.error(r),
                 _badge("pass", "pass") if ok else _badge("FAIL", "fail")], numeric={1, 2})
            for name, a, r, ok in fmt.verification_rows(v)]
    note = (f"onnxruntime against Keras at batch size(s) {escape(fmt.batch_sizes(v))}; an element passes when "
            f"|onnx − keras| ≤ {v.atol:g} + {v.rtol:g} · |keras|.")
    found = fmt.divergence(v)
    if found:
        note += f" <strong>{escape(found)}</strong>"
    return _section("Verification", _table(["output", "max abs err", "max rel err", ""], rows, {1, 2}), note)


def _bar_rows(items: list[tuple[str, float, str]]) -> list[str]:
    top = max((value for _, value, _ in items), default=0) or 1
    return [_tr([label, f'<div class="bar" style="width:{100 * value / top:.1f}%"></div>', text],
                numeric={2}).replace("<td><div", '<td class="barcell"><div', 1)
            for label, value, text in items]


def _timings(report: Report) -> str:
    if not report.seconds:
        return ""
    rows = _bar_rows([(escape(stage), s, fmt.seconds(s)) for stage, s in report.seconds.items()])
    return _section("Timings", _table(["stage", "", "time"], rows, {2}))


def _warnings(report: Report) -> str:
    if not report.warnings:
        return _section("Warnings", '<p class="note">None.</p>')
    items = "".join(f"<li>{escape(w)}</li>" for w in report.warnings)
    return _section(f"Warnings ({len(report.warnings)})", f'<ul class="warnings">{items}</ul>')


def _graph(report: Report) -> str:
    svg = render_svg(report.structure)
    if not svg:
        return ""
    kinds = [k for k in COLOURS if k not in ("input", "output")
             and any(box[2] == k for box in report.structure.boxes.values())]
    legend = "".join(_badge(fmt.HOW_LABELS.get(k, k) if k != "other" else "other ONNX nodes", kind=k) for k in kinds)
    note = "The final ONNX graph by Keras layer, inputs at the top. Chains are collapsed in big graphs (hover for members)."
    return _section("Graph structure", f'<div class="graph-box">{svg}</div><div class="legend">{legend}</div>', note)


def _histogram(report: Report) -> str:
    rows = _bar_rows([(f"<code>{escape(op)}</code>", n, str(n)) for op, n in report.op_histogram])
    rows.append(_tr(["<b>total</b>", "", f"<b>{report.node_count}</b>"], numeric={2}))
    note = f"{report.subgraph_nodes} more nodes live in control-flow subgraphs." if report.subgraph_nodes else ""
    return _section("ONNX op histogram", _table(["op", "", "count"], rows, {2}), note)


def _layers(report: Report) -> str:
    if not report.layers:
        return _section("Layers", '<p class="note">No layer records: the model was not converted from a Keras '
                                  "graph by kerasonnx.</p>", id_="layers")
    rows = []
    for index, root in enumerate(report.layers, 1):
        zebra = "zebra" if index % 2 == 0 else "zebra-off"
        rows.append(_tr(_layer_cells(root, str(index)), numeric={0, 4}, cls=f"layer {zebra}"))
        if root.children:
            inner = [_tr(_layer_cells(row, "", row.depth - root.depth - 1), numeric={4})
                     for child in root.children for row in child.walk()]
            count = sum(1 for child in root.children for _ in child.walk())
            table = _table(["", "layer / op", "class", "how", "nodes", "ONNX ops"], inner, {4}, "inner")
            rows.append(f'<tr class="{zebra}"><td></td><td colspan="5"><details><summary>{count} layers and ops '
                        f"inside <code>{escape(root.name)}</code></summary>{table}</details></td></tr>")
    if report.other_ops:
        rows.append(_tr(["", f"<i>{OTHER}</i>", "", "", str(sum(report.other_ops.values())),
                         escape(fmt.ops_summary(report.other_ops))], numeric={4}))
    note = ("Each Keras layer of the model, how it was converted and the ONNX nodes it became in the final graph "
            "(after BatchNorm folding and clean-up). Traced layers and nested models list what is inside them.")
    table = _table(["#", "layer", "class", "how", "ONNX nodes", "ONNX ops"], rows, {0, 4}, "layers")
    return _section(f"Layers ({report.layer_count})", table, note, id_="layers")


def _layer_cells(row: LayerRow, index: str, level: int = 0) -> list[str]:
    indent = f'<span class="indent" style="width:{14 * level}px"></span>' if level else ""
    calls = f' <span class="muted">×{row.calls} calls</span>' if row.calls > 1 else ""
    name = row.name if row.depth else row.path
    nodes = escape(fmt.nodes_cell(row.final_nodes, row.emitted))
    return [index, f'{indent}<code>{escape(name)}</code>{calls}', escape(row.class_name),
            _badge(fmt.HOW_LABELS.get(row.how, row.how), kind=row.how), nodes, escape(fmt.ops_summary(row.ops))]
