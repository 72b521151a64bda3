"""A model with more than 2 GB of weights converts, saves as standard .onnx + external data that
onnx.load and onnxruntime open directly, matches Keras, and costs little memory beyond Keras' own.

The conversion runs in a subprocess (bench/large_model.py) so that its peak memory is measured alone.
"""

import importlib.util
from pathlib import Path

import onnx
import pytest

pytestmark = pytest.mark.slow  # about 70 s: builds, converts, saves and verifies 2.4 GB of weights
LARGE_MODEL = Path(__file__).resolve().parent.parent / "bench" / "large_model.py"


def _bench():
    spec = importlib.util.spec_from_file_location("large_model_bench", LARGE_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak memory is measured through Linux's /proc")
    out = tmp_path_factory.mktemp("large")
    return _bench().measure("ir", 2.25, out)


def test_over_2gb_converts_saves_and_matches(large):
    assert large["weights_mb"] * 2**20 > 2**31
    assert large["verified"], large  # onnxruntime opened the saved files by path and matched Keras
    path = Path(large["path"])
    assert large["files"] == {path.name: path.stat().st_size, path.name + ".data": path.with_name(path.name + ".data").stat().st_size}
    assert path.stat().st_size < 2**20 and large["files"][path.name + ".data"] > 2**31


def test_peak_memory_stays_below_one_and_a_half_times_the_weights(large):
    assert large["ratio"] <= 1.5, large


def test_saved_files_are_standard_external_data(large):
    path = Path(large["path"])
    onnx.checker.check_model(str(path))
    header = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for t in header.graph.initializer for entry in t.external_data if entry.key == "location"}
    assert locations == {path.name + ".data"}
    full = onnx.load(str(path))  # loads the weights from the side file
    kernel = next(t for t in full.graph.initializer if t.name.endswith("dense_1/kernel"))
    assert len(kernel.raw_data) == 4 * kernel.dims[0] * kernel.dims[1]
