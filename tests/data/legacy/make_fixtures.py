"""Regenerate the tf_keras fixtures used by tests/test_legacy.py (which runs without TensorFlow).

Run in an environment with TensorFlow and tf_keras (e.g. /work/venv-tf):

    TF_USE_LEGACY_KERAS=1 python tests/data/legacy/make_fixtures.py [--all] [--out DIR]

For every model of tests/legacy_zoo.py (ZOO and EXTRA) except MobileNetV2 (too large to ship; included
with ``--all``, which CI uses to write every fixture into a temporary ``--out`` directory and then runs
tests/test_legacy.py on it without TensorFlow, KERASONNX_LEGACY_FIXTURES=DIR) it writes
``<name>.h5`` and ``<name>.keras`` (both saved by tf_keras) and ``<name>.npz`` holding the inputs
(``input_0``, ...) and tf_keras' own outputs (``output_0``, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from legacy_zoo import EXTRA, ZOO, sample_inputs  # noqa: E402

SKIPPED = {"mobilenetv2"}


def write_fixture(name: str, build, out: Path) -> None:
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = build()
    inputs = sample_inputs(model, batch=3, seed=1)
    outputs = model.predict(inputs, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    model.save(out / f"{name}.h5")
    model.save(out / f"{name}.keras")
    arrays = {f"input_{i}": a for i, a in enumerate(inputs)}
    arrays.update({f"output_{i}": np.asarray(a) for i, a in enumerate(outputs)})
    np.savez(out / f"{name}.npz", **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also the models too large to ship")
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write (default: beside this script)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in {**ZOO, **EXTRA}.items():
        if args.all or name not in SKIPPED:
            write_fixture(name, build, args.out)
            print("wrote", name)


if __name__ == "__main__":
    main()
