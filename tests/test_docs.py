"""The generated support table in docs/ matches the registry."""

from pathlib import Path

import keras
import pytest

from kerasonnx.support_table import render

ROOT = Path(__file__).resolve().parent.parent


def test_support_table_is_up_to_date():
    committed = (ROOT / "docs" / "supported.md").read_text()
    if f"({keras.__version__})" not in committed:
        pytest.skip(f"docs/supported.md was generated with another Keras version than {keras.__version__}")
    assert committed == render(), "run: python -m kerasonnx.support_table"


def test_every_converter_declares_cases():
    from kerasonnx.converters import BUILTIN

    missing = [s.keras_class.__name__ for s in BUILTIN.specs() if not s.cases]
    assert not missing, f"converters without test cases: {missing}"
