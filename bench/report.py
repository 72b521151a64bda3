"""Markdown rendering of the benchmark results (the dict that run.py also writes as JSON)."""

from __future__ import annotations

import math

OURS = "kerasonnx"
MB = 2**20


def render(results: dict) -> str:
    meta = results["meta"]
    parts = [
        "# kerasonnx benchmark",
        "",
        _header(meta),
        "",
        "## Corpus",
        "",
        _table(["model", "input", "params", "weights MB", "Keras output std"], _corpus_rows(results)),
        "",
        "## Results",
        "",
        "ORT b1/b8 ms: kerasonnx with its optimisation passes (the default); \"no passes\": the same "
        "model converted with optimize=False, measured interleaved with the others.",
        "",
        _table(["model", "converter", "status", "opset", "convert s", "peak extra MB", "nodes", "Transpose",
                "ORT b1 ms", "ORT b8 ms", "ORT b1 ms no passes", "ORT b8 ms no passes", "max abs err"],
               _result_rows(results)),
        "",
        "## Ratios (kerasonnx against each peer)",
        "",
        "speed-up = peer convert time / kerasonnx convert time (> 1: kerasonnx converts faster); "
        "mem / weights = peak extra conversion memory / size of the model's weights; "
        "latency ratio = kerasonnx ORT latency / peer ORT latency (<= 1.0: kerasonnx's ONNX is as fast "
        "or faster). n/a: one side failed.",
        "",
        _table(["model", "peer", "speed-up", "kerasonnx mem / weights", "peer mem / weights",
                "latency ratio b1", "latency ratio b8"], _ratio_rows(results)),
        "",
    ]
    return "\n".join(parts)


def _header(meta) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    s = meta["settings"]
    quick = ["- **--quick: a smoke test; few repeats and runs, so times and latencies are noisy**"]
    quick = quick if s["quick"] else []
    return "\n".join(quick + [
        f"- command: `{meta['command']}` (cwd `{meta['cwd']}`)",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']['cpu']}; {meta['machine']['cores']} cores "
        f"({meta['machine']['usable_cores']} usable by this process)",
        f"- versions: {versions}",
        f"- conversion time: median of >= {s['repeats']} run(s) (fast conversions repeated up to 1 s / "
        f"20 runs) in one fresh process per model and converter, model already built (imports and a "
        f"tiny warm-up conversion excluded)",
        f"- peak extra memory: RSS high-water mark above the RSS just before one conversion, "
        f"in its own fresh process ({s['memory_method']})",
        f"- onnxruntime: CPUExecutionProvider, intra_op_num_threads={s['threads']}, "
        f"inter_op_num_threads=1, ORT_ENABLE_ALL; latency = median of {s['runs']} runs after "
        f"{s['warmup']} warm-up run(s), same input for every converter",
        f"- max abs err: largest |ONNX - Keras| over all outputs at batch 1 and 8, inputs ~ N(0, 1); "
        f"status says `large error` above {s['error_flag']:g}",
    ])


def _corpus_rows(results):
    for name, entry in results["models"].items():
        ref = entry.get("reference") or {}
        if not ref:
            yield [name, "–", "–", "–", entry.get("reference_error", "–")]
            continue
        shapes = " + ".join("×".join("N" if d is None else str(d) for d in s) for s in ref["input_shapes"])
        yield [name, shapes, f"{ref['params']:,}", _num(ref["weights_bytes"] / MB, 1),
               f"{ref['output_std']:.3g}"]


def _result_rows(results):
    for name, entry in results["models"].items():
        for conv, r in entry["converters"].items():
            lat = r.get("latency_ms", {})
            plain = r.get("unoptimized_latency_ms", {})
            yield [name, conv, r["status"], _num(r.get("opset"), 0), _num(r.get("convert_s"), 3),
                   _num(_mb(r.get("peak_extra_bytes")), 0), _num(r.get("nodes"), 0),
                   _num(r.get("transposes"), 0), _num(lat.get("1"), 2), _num(lat.get("8"), 2),
                   _num(plain.get("1"), 2), _num(plain.get("8"), 2), _sci(r.get("max_abs_error"))]


RATIO_KEYS = ["speed_up", "kerasonnx_mem_per_weight", "peer_mem_per_weight", "latency_ratio_b1",
              "latency_ratio_b8"]
_RATIO_DIGITS = [1, 2, 2, 2, 2]


def ratios(results) -> dict:
    """{model: {peer: {speed_up, kerasonnx_mem_per_weight, ...}}}; None where one side failed."""
    out = {}
    for name, entry in results["models"].items():
        convs = entry["converters"]
        ours = convs.get(OURS)
        weights = (entry.get("reference") or {}).get("weights_bytes")
        if ours is None:
            continue
        for peer, theirs in convs.items():
            if peer == OURS:
                continue
            values = [_div(theirs.get("convert_s"), ours.get("convert_s")),
                      _div(ours.get("peak_extra_bytes"), weights),
                      _div(theirs.get("peak_extra_bytes"), weights),
                      _div(_lat(ours, "1"), _lat(theirs, "1")),
                      _div(_lat(ours, "8"), _lat(theirs, "8"))]
            out.setdefault(name, {})[peer] = dict(zip(RATIO_KEYS, values))
    return out


def _ratio_rows(results):
    for name, peers in ratios(results).items():
        for peer, values in peers.items():
            yield [name, peer] + [_fmt_ratio(values[k], d) for k, d in zip(RATIO_KEYS, _RATIO_DIGITS)]


def _lat(result, batch):
    # A latency only counts for the ratios when the converter's output is trustworthy.
    if result.get("status") != "ok":
        return None
    return result.get("latency_ms", {}).get(batch)


def _div(num, den):
    return None if num is None or not den else num / den


def _fmt_ratio(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mb(value):
    return None if value is None else value / MB


def _num(value, digits):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if digits else f"{value:,.0f}"


def _sci(value):
    if value is None:
        return "–"
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    return f"{value:.1e}"


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)
