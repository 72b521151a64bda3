"""The generated support table in docs/ matches the registry."""

from pathlib import Path

from kerasonnx.support_table import render

ROOT = Path(__file__).resolve().parent.parent


def test_support_table_is_up_to_date():
    committed = (ROOT / "docs" / "supported.md").read_text()
    assert committed == render(), "run: python -m kerasonnx.support_table"


def test_every_converter_declares_cases():
    from kerasonnx.converters import BUILTIN

    missing = [s.keras_class.__name__ for s in BUILTIN.specs() if not s.cases]
    assert not missing, f"converters without test cases: {missing}"
