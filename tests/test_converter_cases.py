"""Every test case declared beside a built-in converter: convert -> onnxruntime -> compare with Keras."""

import keras
import pytest

from kerasonnx.converters import BUILTIN
from kerasonnx.core.opsets import max_supported_opset
from kerasonnx.core.registry import MissingOp
from kerasonnx.testing import run_case

CASES = BUILTIN.cases()
_names = [c.name for c in CASES]
assert len(_names) == len(set(_names)), "converter test case names must be unique"


@pytest.mark.parametrize("case", CASES, ids=_names)
def test_case_matches_keras(case):
    if case.backends and keras.backend.backend() not in case.backends:
        pytest.skip(f"converter follows the {'/'.join(case.backends)} backend(s) only")
    opset = max(case.min_opset or 0, 13) if case.min_opset else None
    if opset and opset > max_supported_opset():
        pytest.skip(f"needs opset {opset}")
    try:
        _, report = run_case(case, opset=opset)
    except MissingOp as exc:
        pytest.skip(str(exc))
    assert report.passed, report.summary()
    assert {c.batch_size for c in report.checks} == {1, 3}
