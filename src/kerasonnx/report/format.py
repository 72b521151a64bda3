"""Text formatting shared by the markdown and HTML renderers."""

from __future__ import annotations

from collections import Counter

HOW_LABELS = {"converter": "built-in converter", "user converter": "user converter", "traced": "traced",
              "nested model": "nested model", "tf2onnx": "tf2onnx"}


def size(nbytes: int | None) -> str:
    if nbytes is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def shape(dims: tuple) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def error(value: float) -> str:
    return f"{value:.2e}"


def ops_summary(ops: Counter, limit: int = 4) -> str:
    """``Conv, Relu ×2, +3 more`` for a layer's final ONNX nodes."""
    if not ops:
        return ""
    parts = [op if n == 1 else f"{op} ×{n}" for op, n in ops.most_common(limit)]
    rest = len(ops) - limit
    return ", ".join(parts) + (f", +{rest} more" if rest > 0 else "")


def nodes_cell(final: int, emitted: int) -> str:
    """``1``, or ``0 (2 before passes)`` when optimisation folded or removed nodes."""
    return str(final) if final == emitted else f"{final} ({emitted} before passes)"


def verification_rows(verification) -> list[tuple[str, float, float, bool]]:
    """Per output: worst max abs and max rel error over the checks, and whether all checks passed."""
    passed: dict[str, bool] = {}
    for check in verification.checks:
        passed[check.name] = passed.get(check.name, True) and bool(check.passed)
    return [(name, a, r, passed.get(name, False)) for name, (a, r) in verification.per_output().items()]


def divergence(verification) -> str:
    """The layer-by-layer finding of a failed verification ("first diverging layer: ..."), or ""."""
    found = getattr(verification, "divergence", None)
    return found.describe() if found is not None else ""


def batch_sizes(verification) -> str:
    sizes = sorted({getattr(c, "batch_size", None) for c in verification.checks} - {None})
    return ", ".join(str(s) for s in sizes)
