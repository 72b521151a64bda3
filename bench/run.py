"""Benchmark kerasonnx against tf2onnx and Keras' own ONNX export on a corpus of Keras models.

Run from the repository root, in the TensorFlow environment (the peers need TensorFlow):

    python bench/run.py                        # full corpus, full repeats
    python bench/run.py --quick --models SmallCNN,MobileNetV2

Every measurement runs in its own fresh process (see workers.py). Writes a Markdown table to stdout and
to bench/results/latest.md, and the raw numbers to bench/results/latest.json. See bench/README.md.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "tensorflow"  # inherited by every worker; the peers need TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import report  # noqa: E402
import workers  # noqa: E402
from subproc import run_isolated  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = ["SmallCNN", "MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121", "ConvNeXtTiny",
          "LSTMText", "GRU", "BiLSTM", "TransformerEncoder", "CausalDecoder"]  # = corpus.BUILDERS
CONVERTERS = list(workers.CONVERTERS)
PACKAGES = ["keras", "onnx", "onnxruntime", "tensorflow", "tf2onnx", "kerasonnx", "onnx-ir", "numpy"]
FULL = {"repeats": 3, "runs": 20, "warmup": 3}
QUICK = {"repeats": 1, "runs": 5, "warmup": 1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma-separated subset of: {','.join(MODELS)} (case-insensitive)")
    p.add_argument("--converters", help=f"comma-separated subset of: {','.join(CONVERTERS)}")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK['repeats']} conversion, {QUICK['runs']} ORT runs per batch")
    p.add_argument("--repeats", type=int, help=f"conversions timed per converter (default {FULL['repeats']})")
    p.add_argument("--runs", type=int, help=f"timed onnxruntime runs per batch size (default {FULL['runs']})")
    p.add_argument("--warmup", type=int, help=f"onnxruntime warm-up runs (default {FULL['warmup']})")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra_op_num_threads (default 1)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a worker is killed")
    p.add_argument("--error-flag", type=float, default=1e-3,
                   help="max abs error above which the status says 'large error' (default 1e-3)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="where latest.md/.json go")
    p.add_argument("--keep-files", action="store_true",
                   help="keep the ONNX files, weights and Keras references in <out>/work")
    args = p.parse_args(argv)
    args.models = _pick(args.models, MODELS, "model")
    args.converters = _pick(args.converters, CONVERTERS, "converter")
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _pick(text, known, kind):
    if not text:
        return list(known)
    by_lower = {k.lower(): k for k in known}
    chosen = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.lower() not in by_lower:
            sys.exit(f"unknown {kind} {item!r}; choose from {', '.join(known)}")
        chosen.append(by_lower[item.lower()])
    return chosen


# --------------------------------------------------------------------------- orchestration

def bench_model(name, args, workdir, logdir):
    """Reference, then for each converter: timing (writes the file), memory, onnxruntime."""
    entry = {"reference": None, "converters": {}}
    progress(f"{name}: Keras reference")
    ref = run_isolated(workers.reference_worker, {"model_name": name, "workdir": str(workdir)},
                       logdir / f"{name}.reference.log", args.timeout)
    if not ref.ok:
        entry["reference_error"] = ref.reason
        for conv in args.converters:
            entry["converters"][conv] = {"status": f"reference failed: {ref.reason}",
                                     "logs": {"reference": ref.log}}
        return entry
    entry["reference"] = ref.value
    for conv in args.converters:
        entry["converters"][conv] = bench_converter(name, conv, ref.value, args, workdir, logdir)
    measure_latency(name, entry, ref.value, args, logdir)
    return entry


UNOPTIMIZED = "kerasonnx without passes"  # latency_worker key of kerasonnx's optimize=False file


def measure_latency(name, entry, ref, args, logdir):
    """Latency of every converter whose file ran correctly, interleaved in one process (kerasonnx's
    file without the optimisation passes too, stored as its ``unoptimized_latency_ms``)."""
    runnable = {conv: r["onnx_path"] for conv, r in entry["converters"].items()
                if r.get("status") in ("ok", "large error") and r.get("onnx_path")}
    ours = entry["converters"].get(report.OURS, {})
    if report.OURS in runnable and ours.get("unoptimized_path"):
        runnable[UNOPTIMIZED] = ours["unoptimized_path"]
    if not runnable:
        return
    progress(f"{name}: onnxruntime latency, interleaved: {', '.join(runnable)}")
    latency = run_isolated(workers.latency_worker, {"onnx_paths": runnable, "ref_path": ref["ref_path"],
                           "threads": args.threads, "warmup": args.warmup, "runs": args.runs},
                           logdir / f"{name}.latency.log", args.timeout)
    unoptimized = runnable.pop(UNOPTIMIZED, None)
    if unoptimized and latency.ok:
        ours["unoptimized_latency_ms"] = latency.value[UNOPTIMIZED]["latency_ms"]
        ours["unoptimized_latency_all_ms"] = latency.value[UNOPTIMIZED]["latency_all_ms"]
    for conv in runnable:
        if latency.ok:
            entry["converters"][conv].update(latency.value[conv])
        else:
            entry["converters"][conv]["status"] = "latency worker: " + latency.reason


def bench_converter(name, conv, ref, args, workdir, logdir):
    result = {"status": "ok", "logs": {}}
    log = lambda kind: logdir / f"{name}.{conv}.{kind}.log"  # noqa: E731

    progress(f"{name}: {conv}: conversion time x{args.repeats}")
    timing = run_isolated(workers.timing_worker, {"model_name": name, "converter": conv,
                          "workdir": str(workdir), "repeats": args.repeats}, log("timing"), args.timeout)
    result["logs"]["timing"] = timing.log
    if not timing.ok:
        result["status"] = timing.reason
        return result
    result["convert_times_s"] = timing.value["times_s"]
    result["convert_s"] = timing.value["median_s"]
    result["write_s"] = timing.value["write_s"]
    result["warmup_error"] = timing.value["warmup_error"]
    result["unoptimized_path"] = timing.value.get("unoptimized_path")

    progress(f"{name}: {conv}: peak memory")
    memory = run_isolated(workers.memory_worker, {"model_name": name, "converter": conv,
                          "workdir": str(workdir)}, log("memory"), args.timeout)
    result["logs"]["memory"] = memory.log
    if memory.ok:
        result.update(peak_extra_bytes=memory.value["peak_extra_bytes"],
                      retained_bytes=memory.value["retained_bytes"],
                      rss_before_bytes=memory.value["rss_before_bytes"],
                      memory_method=memory.value["method"])
    else:
        result["memory_error"] = memory.reason

    progress(f"{name}: {conv}: onnxruntime")
    result["onnx_path"] = timing.value["onnx_path"]
    runtime = run_isolated(workers.runtime_worker, {"onnx_path": timing.value["onnx_path"],
                           "ref_path": ref["ref_path"], "threads": args.threads, "warmup": 0,
                           "runs": 0}, log("runtime"), args.timeout)
    result["logs"]["runtime"] = runtime.log
    if not runtime.ok:
        result["status"] = "ORT worker: " + runtime.reason
        return result
    result.update(runtime.value)
    error = result.get("max_abs_error")
    if result["status"] == "ok" and error is not None and not error <= args.error_flag:
        result["status"] = "large error"
    if result["status"] == "ok" and not memory.ok:
        result["status"] = "memory run failed: " + memory.reason
    return result


def progress(message):
    print(f"[bench {datetime.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- metadata and output

def metadata(args):
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["python"] = platform.python_version()
    command = "KERAS_BACKEND=tensorflow " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    return {
        "command": command,
        "cwd": os.getcwd(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions,
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
                    "platform": platform.platform()},
        "settings": {"models": args.models, "converters": args.converters, "quick": args.quick,
                     "repeats": args.repeats, "runs": args.runs, "warmup": args.warmup,
                     "threads": args.threads, "error_flag": args.error_flag, "batches": list(workers.BATCHES),
                     "tf2onnx_opset": workers.TF2ONNX_OPSET, "memory_method": "?"},
    }


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_method(results):
    methods = {r.get("memory_method") for e in results["models"].values() for r in e["converters"].values()}
    methods.discard(None)
    return " / ".join(sorted(methods)) or "n/a"


def write_outputs(results, out_dir):
    results["meta"]["settings"]["memory_method"] = _memory_method(results)
    results["ratios"] = report.ratios(results)
    markdown = report.render(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.md").write_text(markdown)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    return markdown


def _clean(workdir):
    for path in workdir.iterdir():
        if path.suffix in (".onnx", ".npz", ".h5") or path.name.endswith(".onnx.data"):
            path.unlink()


def main(argv=None):
    args = parse_args(argv)
    workdir = args.out / "work"
    logdir = workdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    results = {"meta": metadata(args), "models": {}}
    try:
        for name in args.models:
            results["models"][name] = bench_model(name, args, workdir, logdir)
            write_outputs(results, args.out)  # partial results survive an interruption
    finally:
        if not args.keep_files:
            _clean(workdir)
    markdown = write_outputs(results, args.out)
    print(markdown)
    progress(f"wrote {args.out / 'latest.md'} and {args.out / 'latest.json'}; worker logs in {logdir}")


if __name__ == "__main__":
    main()
