"""Peak memory of converting and saving a model with more than 2 GB of weights.

    python bench/large_model.py [--gib 2.25] [--routes ir,proto] [--out DIR] [--json]

Each route runs in a fresh process (numpy backend): it builds a Keras model of four large Dense
layers (weights from a fast RNG), records its resident memory, resets the peak (``/proc/self/clear_refs``),
converts and saves, and reports the peak resident memory above Keras' own footprint, then verifies
the saved files in onnxruntime against Keras. Routes:

- ``ir``: ``kerasonnx.api.convert_to_ir`` + ``kerasonnx.save`` (weights never copied into a protobuf);
- ``proto``: ``kerasonnx.convert`` (an ``onnx.ModelProto``, one copy of the weights) + ``kerasonnx.save``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 2**20


def layer_widths(gib: float) -> tuple[int, list[int]]:
    """Input width and Dense widths giving about ``gib`` GiB of float32 weights (w->2w->2w->w->16)."""
    # weights = 4 * (2w^2 + 4w^2 + 2w^2 + 16w) bytes ~ 32 w^2
    width = int(((gib * 2**30) / 32) ** 0.5) // 64 * 64
    return width, [2 * width, 2 * width, width, 16]


def build_model(gib: float, seed: int = 0):
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)

    def scaled_normal(shape, dtype=None):
        """N(0, 1/fan_in) float32, generated directly in float32 (fast, no float64 copy)."""
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(shape[0] ** -0.5)

    width, units = layer_widths(gib)
    x = keras.Input((width,), name="features")
    h = x
    for i, n in enumerate(units):
        h = keras.layers.Dense(n, kernel_initializer=scaled_normal, bias_initializer="zeros",
                               activation="relu" if i < len(units) - 1 else None, name=f"dense_{i}")(h)
    return keras.Model(x, h, name="large_dense")


def _memory() -> dict[str, float]:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024 / MB
    return fields


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def run_route(route: str, gib: float, out_dir: Path) -> dict:
    """Build, convert, save and verify in this process; returns the measurements."""
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    import kerasonnx
    from kerasonnx.api import convert_to_ir

    started = time.perf_counter()
    model = build_model(gib)
    weights = sum(v.numpy().nbytes for v in model.weights) / MB
    built = time.perf_counter()
    keras_rss = _memory()["VmRSS"]
    _reset_peak()
    path = out_dir / f"large_{route}.onnx"
    onnx_model = convert_to_ir(model) if route == "ir" else kerasonnx.convert(model)
    converted = time.perf_counter()
    kerasonnx.save(onnx_model, path)
    saved = time.perf_counter()
    peak_extra = _memory()["VmHWM"] - keras_rss
    del onnx_model
    report = kerasonnx.verify(model, str(path), batch_sizes=(2,))
    files = {p.name: p.stat().st_size for p in sorted(out_dir.glob(path.name + "*"))}
    return {
        "route": route, "weights_mb": weights, "keras_rss_mb": keras_rss, "peak_extra_mb": peak_extra,
        "ratio": peak_extra / weights, "build_s": built - started, "convert_s": converted - built,
        "save_s": saved - converted, "verified": report.passed, "max_abs": report.max_abs,
        "atol": report.atol, "files": files, "path": str(path),
    }


def measure(route: str, gib: float, out_dir: Path) -> dict:
    """``run_route`` in a fresh Python process (so that peaks do not mix)."""
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    result = subprocess.run([sys.executable, __file__, "--child", route, "--gib", str(gib), "--out", str(out_dir)],
                            capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"route {route} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    rows = ["| route | weights MB | Keras RSS MB | peak extra MB (convert + save) | extra / weights | "
            "convert s | save s | verified (max abs err) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['route']} | {r['weights_mb']:,.0f} | {r['keras_rss_mb']:,.0f} | {r['peak_extra_mb']:,.0f} | "
                    f"{r['ratio']:.2f} | {r['convert_s']:.2f} | {r['save_s']:.2f} | "
                    f"{'yes' if r['verified'] else 'NO'} ({r['max_abs']:.1e}) |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.25, help="weight size in GiB (default 2.25: over 2 GB)")
    parser.add_argument("--routes", default="ir,proto", help="comma-separated: ir, proto")
    parser.add_argument("--out", help="directory for the .onnx files (default: a temporary one, removed)")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON instead of a table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_route(args.child, args.gib, Path(args.out))))
        return 0
    with tempfile.TemporaryDirectory(prefix="kerasonnx-large-") as tmp:
        results = []
        for route in args.routes.split(","):
            out_dir = Path(args.out or tmp)
            results.append(measure(route, args.gib, out_dir))
            if not args.out:
                for file in out_dir.glob("large_*"):
                    file.unlink()
    print(json.dumps(results, indent=1) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
