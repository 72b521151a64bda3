"""``kerasonnx doctor [MODEL]``: versions, what converts here, what MODEL is, and advice."""

from __future__ import annotations


def add_parser(sub):
    doctor = sub.add_parser("doctor", help="check this environment (and what a model file is)")
    doctor.add_argument("model", nargs="?", help="a model file or SavedModel directory to describe")
    return doctor


def run(args) -> int:
    """Print the report; exit 3 when MODEL is given but cannot be converted in this environment."""
    from ..doctor import report

    result = report(args.model)
    print(result.text())
    return 3 if result.model is not None and result.model.engine is None else 0
