"""Measurement workers. Each runs in its own fresh spawned process (see subproc.run_isolated).

- reference_worker: build the model once, save its weights, inputs and Keras outputs.
- timing_worker:    convert ``repeats`` times, report the times, write the last ONNX file.
- memory_worker:    convert once, report the RSS high-water mark above the RSS just before.
- runtime_worker:   count nodes, load the file in onnxruntime, measure latency and error.

Heavy imports happen inside the functions so that the parent process stays light.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from subproc import short_reason

BATCHES = (1, 8)
TF2ONNX_OPSET = 18  # the newest opset tf2onnx 1.17 supports
MIN_TOTAL_S, MAX_RUNS = 1.0, 20  # timing_worker: extra runs for fast conversions


# --------------------------------------------------------------------------- converters
# Each takes (model, path) and returns a ModelProto, or None when it wrote ``path`` itself.
# Only this call is timed / memory-measured.

def convert_kerasonnx(model, path):
    import kerasonnx

    return kerasonnx.convert(model)


def convert_tf2onnx(model, path):
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=TF2ONNX_OPSET)
    return proto


def write_kerasonnx_unoptimized(model, path):
    """kerasonnx without its optimisation passes (``optimize=False``), for the with/without
    latency columns; written beside the timed file, never timed itself."""
    import kerasonnx

    unoptimized = Path(path).with_suffix(".unoptimized.onnx")
    kerasonnx.save(kerasonnx.convert(model, optimize=False), unoptimized)
    return str(unoptimized)


def convert_keras_export(model, path):
    model.export(str(path), format="onnx", verbose=False)
    return None


CONVERTERS = {
    "kerasonnx": convert_kerasonnx,
    "tf2onnx": convert_tf2onnx,
    "keras-export": convert_keras_export,
}
# Modules each converter imports lazily; imported before any measurement.
_PRELOAD = {
    "kerasonnx": ["kerasonnx", "onnx_ir", "onnxruntime"],
    "tf2onnx": ["tensorflow", "tf2onnx", "tf2onnx.convert"],
    "keras-export": ["tensorflow", "tf2onnx", "tf2onnx.convert", "keras.src.export.onnx"],
}


def _write_onnx(result, path, converter):
    if result is None:
        return  # the converter wrote the file itself
    if converter == "kerasonnx":
        import kerasonnx

        kerasonnx.save(result, path)
    else:
        import onnx

        onnx.save_model(result, str(path))


def _prepare(converter, workdir):
    """Import everything the converter needs and convert a tiny model once (lazy imports, caches)."""
    import importlib

    from corpus import tiny_functional

    for module in _PRELOAD[converter]:
        importlib.import_module(module)
    path = Path(workdir) / f"warmup.{converter}.{os.getpid()}.onnx"
    try:
        CONVERTERS[converter](tiny_functional(), path)
        return None
    except Exception as exc:  # noqa: BLE001 - the real model may still convert
        return short_reason(exc)
    finally:
        path.unlink(missing_ok=True)


def _load_model(model_name, workdir):
    from corpus import build_model, make_input

    model = build_model(model_name)
    model.load_weights(Path(workdir) / f"{model_name}.weights.h5")
    # Call it once, as any model that has been used has been (Keras' export refuses never-called models).
    zeros = [np.zeros_like(make_input(t, 1, np.random.default_rng(0))) for t in model.inputs]
    model(zeros[0] if len(zeros) == 1 else zeros, training=False)
    return model


# --------------------------------------------------------------------------- reference

def reference_worker(model_name, workdir):
    """Build the model, save its weights, and the inputs and Keras outputs at every batch size."""
    import keras

    from corpus import build_model, make_input, weights_bytes

    start = time.perf_counter()
    model = build_model(model_name)
    build_s = time.perf_counter() - start
    model.save_weights(Path(workdir) / f"{model_name}.weights.h5")
    arrays = {}
    out_std = []
    for batch in BATCHES:
        rng = np.random.default_rng(batch)
        inputs = [make_input(t, batch, rng) for t in model.inputs]
        outputs = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
        outputs = [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(outputs)]
        arrays.update({f"in{batch}_{i}": a for i, a in enumerate(inputs)})
        arrays.update({f"out{batch}_{i}": a for i, a in enumerate(outputs)})
        out_std.append(float(max(np.std(o) for o in outputs)))
    ref_path = Path(workdir) / f"{model_name}.reference.npz"
    np.savez(ref_path, **arrays)
    return {
        "params": int(model.count_params()),
        "weights_bytes": weights_bytes(model),
        "input_shapes": [list(t.shape) for t in model.inputs],
        "output_shapes": [list(t.shape) for t in model.outputs],
        "output_std": min(out_std),  # a sanity value: ~0 would make the error column meaningless
        "build_s": build_s,
        "ref_path": str(ref_path),
    }


# --------------------------------------------------------------------------- conversion time

def timing_worker(model_name, converter, workdir, repeats):
    """Median wall time of >= ``repeats`` conversions of the in-memory model; writes the last result."""
    model = _load_model(model_name, workdir)
    warmup_error = _prepare(converter, workdir)
    path = Path(workdir) / f"{model_name}.{converter}.onnx"
    times = []
    # At least ``repeats`` runs; fast conversions get more (up to 1 s in total, 20 runs) for a stable median.
    while len(times) < repeats or (sum(times) < MIN_TOTAL_S and len(times) < MAX_RUNS):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = CONVERTERS[converter](model, path)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    _write_onnx(result, path, converter)  # not in the timed call (Keras' export writes inside it)
    write_s = time.perf_counter() - start
    unoptimized = write_kerasonnx_unoptimized(model, path) if converter == "kerasonnx" else None
    return {"times_s": times, "median_s": statistics.median(times), "onnx_path": str(path),
            "write_s": write_s, "warmup_error": warmup_error, "unoptimized_path": unoptimized}


# --------------------------------------------------------------------------- conversion memory

def memory_worker(model_name, converter, workdir):
    """Peak RSS above the pre-conversion RSS during one conversion (model built, imports done)."""
    model = _load_model(model_name, workdir)
    warmup_error = _prepare(converter, workdir)
    path = Path(workdir) / f"{model_name}.{converter}.memory.onnx"
    gc.collect()
    before = _status_bytes("VmRSS")
    if _reset_high_water_mark():
        method = "VmHWM after clear_refs"
        result = CONVERTERS[converter](model, path)
        peak = _status_bytes("VmHWM")
    else:
        method = "psutil RSS sampled every 2 ms"
        with _PeakSampler() as sampler:
            result = CONVERTERS[converter](model, path)
        peak = sampler.peak
    after = _status_bytes("VmRSS")
    del result
    path.unlink(missing_ok=True)
    return {"rss_before_bytes": before, "peak_extra_bytes": max(0, peak - before),
            "retained_bytes": after - before, "method": method, "warmup_error": warmup_error}


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_high_water_mark():
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _PeakSampler:
    """Fallback when clear_refs is not writable: poll RSS from a thread."""

    def __init__(self, interval=0.002):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._proc.memory_info().rss

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


# --------------------------------------------------------------------------- onnxruntime

def runtime_worker(onnx_path, ref_path, threads, warmup, runs):
    """Graph statistics, then onnxruntime latency and max abs error against the Keras reference."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(onnx_path)
    result = {
        "status": "ok",
        "nodes": count_nodes(proto.graph),
        "transposes": count_nodes(proto.graph, "Transpose"),
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "file_bytes": os.path.getsize(onnx_path),
        "latency_ms": {},
        "latency_all_ms": {},
        "max_abs_error_by_batch": {},
    }
    del proto
    try:
        session = ort.InferenceSession(onnx_path, _session_options(ort, threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        print(f"onnxruntime could not load {onnx_path}: {exc}", file=sys.stderr)
        result["status"] = "ORT load: " + short_reason(exc)
        return result
    reference = np.load(ref_path)
    n_inputs = sum(1 for k in reference.files if k.startswith(f"in{BATCHES[0]}_"))
    names = [i.name for i in session.get_inputs()]
    if len(names) > n_inputs:
        result["extra_inputs"] = names[n_inputs:]
        result["status"] = f"ORT run: needs {len(names) - n_inputs} extra graph input(s)"
        return result
    for batch in BATCHES:
        feed = {name: reference[f"in{batch}_{i}"] for i, name in enumerate(names)}
        expected = [reference[f"out{batch}_{i}"] for i in range(len(session.get_outputs()))]
        try:
            got = session.run(None, feed)
        except Exception as exc:  # noqa: BLE001
            print(f"onnxruntime failed at batch {batch}: {exc}", file=sys.stderr)
            _set_status(result, f"ORT run b{batch}: " + short_reason(exc))
            continue
        error, problem = _max_abs_error(got, expected)
        result["max_abs_error_by_batch"][str(batch)] = error
        if problem:
            _set_status(result, f"b{batch}: {problem}")
        if runs:
            times = _latencies(session, feed, warmup, runs)
            result["latency_all_ms"][str(batch)] = times
            result["latency_ms"][str(batch)] = statistics.median(times)
    errors = list(result["max_abs_error_by_batch"].values())
    result["max_abs_error"] = max(errors) if errors else None
    return result


def latency_worker(onnx_paths, ref_path, threads, warmup, runs):
    """onnxruntime latency of several converters' files of one model, measured interleaved (one run
    of each file in turn) so that machine noise hits every converter alike."""
    import onnxruntime as ort

    reference = np.load(ref_path)
    sessions = {conv: ort.InferenceSession(path, _session_options(ort, threads),
                                           providers=["CPUExecutionProvider"])
                for conv, path in onnx_paths.items()}
    result = {conv: {"latency_ms": {}, "latency_all_ms": {}} for conv in sessions}
    for batch in BATCHES:
        feeds = {conv: {i.name: reference[f"in{batch}_{k}"] for k, i in enumerate(s.get_inputs())}
                 for conv, s in sessions.items()}
        for _ in range(warmup):
            for conv, session in sessions.items():
                session.run(None, feeds[conv])
        times = {conv: [] for conv in sessions}
        for _ in range(runs):
            for conv, session in sessions.items():
                start = time.perf_counter()
                session.run(None, feeds[conv])
                times[conv].append((time.perf_counter() - start) * 1000.0)
        for conv in sessions:
            result[conv]["latency_all_ms"][str(batch)] = times[conv]
            result[conv]["latency_ms"][str(batch)] = statistics.median(times[conv])
    return result


def _session_options(ort, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def _latencies(session, feed, warmup, runs):
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _max_abs_error(got, expected):
    if len(got) != len(expected):
        return float("inf"), f"{len(got)} outputs, Keras has {len(expected)}"
    worst = 0.0
    for g, e in zip(got, expected):
        g = np.asarray(g)
        if g.shape != e.shape:
            return float("inf"), f"output shape {list(g.shape)} != Keras {list(e.shape)}"
        diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
        if np.isnan(diff).any():
            return float("nan"), "NaN where Keras has a number"
        worst = max(worst, float(np.max(diff, initial=0.0)))
    return worst, None


def _set_status(result, status):
    if result["status"] == "ok":
        result["status"] = status


def count_nodes(graph, op_type=None):
    """Nodes in ``graph`` and its subgraphs (If/Loop/Scan bodies), optionally of one op type."""
    total = 0
    for node in graph.node:
        total += op_type is None or node.op_type == op_type
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                total += count_nodes(sub, op_type)
    return total
