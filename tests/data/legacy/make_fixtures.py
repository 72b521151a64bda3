"""Regenerate the tf_keras fixtures used by tests/test_legacy.py (which runs without TensorFlow).

Run in an environment with TensorFlow and tf_keras (e.g. /work/venv-tf):

    TF_USE_LEGACY_KERAS=1 python tests/data/legacy/make_fixtures.py

For every model of tests/legacy_zoo.py (ZOO and EXTRA) except MobileNetV2 (too large to ship) it writes
``<name>.h5`` and ``<name>.keras`` (both saved by tf_keras) and ``<name>.npz`` holding the inputs
(``input_0``, ...) and tf_keras' own outputs (``output_0``, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from legacy_zoo import EXTRA, ZOO, sample_inputs  # noqa: E402

SKIPPED = {"mobilenetv2"}


def write_fixture(name: str, build) -> None:
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = build()
    inputs = sample_inputs(model, batch=3, seed=1)
    outputs = model.predict(inputs, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    model.save(HERE / f"{name}.h5")
    model.save(HERE / f"{name}.keras")
    arrays = {f"input_{i}": a for i, a in enumerate(inputs)}
    arrays.update({f"output_{i}": np.asarray(a) for i, a in enumerate(outputs)})
    np.savez(HERE / f"{name}.npz", **arrays)


def main() -> None:
    for name, build in {**ZOO, **EXTRA}.items():
        if name not in SKIPPED:
            write_fixture(name, build)
            print("wrote", name)


if __name__ == "__main__":
    main()
