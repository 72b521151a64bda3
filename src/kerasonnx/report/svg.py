"""A small SVG picture of a converted graph at Keras-layer granularity.

Layers are laid out top to bottom in ranks (longest path from the inputs), edges spanning several
ranks pass through placeholder slots so they do not cross boxes, and each rank's boxes are ordered
by the position of their predecessors. Big graphs are made readable and bounded: chains of layers
with one input and one output collapse into one box (hover shows the members), and the ranks wrap
into side-by-side columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from .model import Structure

COLLAPSE_ABOVE = 24  # boxes: collapse single-in/single-out chains of bigger graphs
RANKS_PER_COLUMN = 16
MAX_COLUMNS = 6
BOX_W, BOX_H, DUMMY_W = 188, 36, 14
GAP_X, GAP_Y, COLUMN_GAP, MARGIN = 16, 24, 48, 16
LABEL_CHARS = 26

COLOURS = {  # kind -> (fill, stroke)
    "converter": ("#e8f0fe", "#4a7bd0"),
    "user converter": ("#fff1e0", "#e08a1e"),
    "traced": ("#f3e8fd", "#8e5bd0"),
    "nested model": ("#e0f5f1", "#2b9e8a"),
    "tf2onnx": ("#fce8ec", "#c2185b"),
    "other": ("#f1f3f4", "#80868b"),
    "input": ("#37474f", "#37474f"),
    "output": ("#37474f", "#37474f"),
}


@dataclass(eq=False)
class _Block:
    members: list[str]
    label: str
    detail: str
    kind: str
    nodes: int
    rank: int = 0
    x: float = 0.0
    y: float = 0.0
    width: float = BOX_W
    dummy: bool = False
    preds: list["_Block"] = field(default_factory=list)
    succs: list["_Block"] = field(default_factory=list)


def render_svg(structure: Structure) -> str:
    """The picture as an inline ``<svg>`` element (scales to its container's width)."""
    blocks, edges = _blocks(structure)
    if not blocks:
        return ""
    _rank(blocks)
    chains = _route(blocks, edges)
    rows = _order(blocks + [d for chain in chains for d in chain[1:-1]])
    width, height = _place(rows)
    parts = [_edge(chain) for chain in chains] + [_box(b) for b in blocks]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" role="img" aria-label="layer graph">'
            '<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" fill="#9aa0a6"/></marker></defs>'
            + "".join(parts) + "</svg>")


def _blocks(structure: Structure) -> tuple[list[_Block], list[tuple[_Block, _Block]]]:
    order = {box: i for i, box in enumerate(structure.boxes)}
    edges = [(a, b) for a, b in structure.edges if a in order and b in order and order[a] < order[b]]
    groups = _chains(list(structure.boxes), edges, structure) if len(structure.boxes) > COLLAPSE_ABOVE \
        else [[box] for box in structure.boxes]
    block_of: dict[str, _Block] = {}
    blocks = []
    for members in groups:
        block = _merge(members, structure)
        blocks.append(block)
        for member in members:
            block_of[member] = block
    links = {(block_of[a], block_of[b]): None for a, b in edges if block_of[a] is not block_of[b]}
    for a, b in links:
        a.succs.append(b)
        b.preds.append(a)
    return blocks, list(links)


def _chains(boxes: list[str], edges, structure: Structure) -> list[list[str]]:
    """Boxes grouped into maximal chains whose inner links are the only edge of both ends."""
    succs: dict[str, list[str]] = {b: [] for b in boxes}
    preds: dict[str, list[str]] = {b: [] for b in boxes}
    for a, b in edges:
        succs[a].append(b)
        preds[b].append(a)

    def linkable(a: str, b: str) -> bool:
        plain = all(structure.boxes[x][2] not in ("input", "output") for x in (a, b))
        return plain and succs[a] == [b] and preds[b] == [a]

    groups, seen = [], set()
    for box in boxes:
        if box in seen or (len(preds[box]) == 1 and linkable(preds[box][0], box)):
            continue
        chain = [box]
        while len(succs[chain[-1]]) == 1 and linkable(chain[-1], succs[chain[-1]][0]):
            chain.append(succs[chain[-1]][0])
        seen.update(chain)
        groups.append(chain)
    groups += [[b] for b in boxes if b not in seen]  # a cycle of chain links (not expected)
    return groups


def _merge(members: list[str], structure: Structure) -> _Block:
    infos = [structure.boxes[m] for m in members]
    nodes = sum(info[3] for info in infos)
    kinds = [info[2] for info in infos]
    kind = max(set(kinds), key=kinds.count)
    if len(members) == 1:
        label, detail, _, count = infos[0]
        if kind not in ("input", "output"):
            detail = f"{detail} · {count} node{'s' * (count != 1)}" if detail else f"{count} node{'s' * (count != 1)}"
        return _Block(members, label, detail, kind, nodes)
    last = _shorten(infos[-1][0], LABEL_CHARS - 2)
    return _Block(members, infos[0][0], f"→ {last} ({len(members)} layers)", kind, nodes)


def _rank(blocks: list[_Block]) -> None:
    for block in blocks:  # blocks are in topological order
        block.rank = max((p.rank + 1 for p in block.preds), default=0)
    for block in blocks:  # an input read late (a second model input) sits just above its reader
        if block.succs and block.kind == "input":
            block.rank = min(s.rank for s in block.succs) - 1


def _route(blocks: list[_Block], edges) -> list[list[_Block]]:
    """Each edge as a chain of blocks: source, one placeholder per rank it crosses, target."""
    chains = []
    for a, b in edges:
        chain = [a]
        for rank in range(a.rank + 1, b.rank):
            chain.append(_Block([], "", "", "dummy", 0, rank=rank, width=DUMMY_W, dummy=True))
        chain.append(b)
        if len(chain) > 2:  # the ordering sees the placeholders as the neighbours
            a.succs.remove(b)
            b.preds.remove(a)
            for u, v in zip(chain, chain[1:]):
                u.succs.append(v)
                v.preds.append(u)
        chains.append(chain)
    return chains


def _order(items: list[_Block]) -> list[list[_Block]]:
    """Blocks per rank, ordered by the mean position of their neighbours (a few sweeps)."""
    rows: list[list[_Block]] = [[] for _ in range(max(b.rank for b in items) + 1)]
    for item in items:
        rows[item.rank].append(item)
    for sweep in range(4):
        down = sweep % 2 == 0
        sequence = rows[1:] if down else rows[-2::-1]
        for row in sequence:
            position = {id(b): i / max(1, len(r)) for r in rows for i, b in enumerate(r)}
            row.sort(key=lambda b: _mean([position[id(n)] for n in (b.preds if down else b.succs)],
                                         position[id(b)]))
    return rows


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _place(rows: list[list[_Block]]) -> tuple[float, float]:
    per_column = max(RANKS_PER_COLUMN, math.ceil(len(rows) / MAX_COLUMNS))
    columns = [rows[i:i + per_column] for i in range(0, len(rows), per_column)]
    left = MARGIN
    height = 0.0
    for column in columns:
        widths = [sum(b.width for b in row) + GAP_X * (len(row) - 1) for row in column]
        column_width = max(widths)
        for j, (row, row_width) in enumerate(zip(column, widths)):
            x = left + (column_width - row_width) / 2
            for block in row:
                block.x, block.y = x, MARGIN + j * (BOX_H + GAP_Y)
                x += block.width + GAP_X
        left += column_width + COLUMN_GAP
        height = max(height, MARGIN * 2 + len(column) * (BOX_H + GAP_Y) - GAP_Y)
    return left - COLUMN_GAP + MARGIN, height


def _edge(chain: list[_Block]) -> str:
    path = []
    for u, v in zip(chain, chain[1:]):
        x1, y1 = u.x + u.width / 2, u.y + BOX_H
        x2, y2 = v.x + v.width / 2, v.y
        if y2 <= y1:  # the ranks wrapped into the next column: stubs out of and into the columns
            path.append(f"M{x1:.1f},{y1:.1f} v{GAP_Y / 2:.1f} M{x2:.1f},{y2 - GAP_Y / 2:.1f} V{y2:.1f}")
            continue
        mid = (y1 + y2) / 2
        path.append(f"M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}")
        if v.dummy:
            path.append(f"M{x2:.1f},{y2:.1f} V{y2 + BOX_H:.1f}")
    return (f'<path d="{" ".join(path)}" fill="none" stroke="#9aa0a6" stroke-width="1.3" '
            'marker-end="url(#arrow)"/>')


def _box(block: _Block) -> str:
    fill, stroke = COLOURS.get(block.kind, COLOURS["other"])
    dark = block.kind in ("input", "output")
    text, muted = ("#ffffff", "#cfd8dc") if dark else ("#202124", "#5f6368")
    radius = BOX_H / 2 if dark else 6
    title = "\n".join(block.members) + f"\n({block.nodes} ONNX nodes)" if len(block.members) > 1 else block.label
    cx = block.x + block.width / 2
    return (f'<g><title>{escape(title)}</title>'
            f'<rect x="{block.x:.1f}" y="{block.y:.1f}" width="{block.width}" height="{BOX_H}" rx="{radius}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.2"/>'
            f'<text x="{cx:.1f}" y="{block.y + 15:.1f}" text-anchor="middle" font-size="11.5" font-weight="600" '
            f'fill="{text}">{escape(_shorten(block.label))}</text>'
            f'<text x="{cx:.1f}" y="{block.y + 29:.1f}" text-anchor="middle" font-size="9.5" '
            f'fill="{muted}">{escape(_shorten(block.detail, LABEL_CHARS + 8))}</text></g>')


def _shorten(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` cut in the middle to ``limit`` characters (names differ most at both ends)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]
