"""Run one measurement in a fresh spawned process and turn any failure into a short phrase."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import traceback
from dataclasses import dataclass, field

_SPAWN = multiprocessing.get_context("spawn")


@dataclass
class Outcome:
    ok: bool
    value: dict = field(default_factory=dict)
    reason: str = ""  # short phrase when not ok
    log: str = ""     # file holding the worker's stdout/stderr (and the traceback, if any)


def run_isolated(fn, kwargs: dict, log_path, timeout: float) -> Outcome:
    """Call ``fn(**kwargs)`` in a new spawned interpreter; never raises for a worker failure."""
    receiver, sender = _SPAWN.Pipe(duplex=False)
    proc = _SPAWN.Process(target=_child, args=(sender, fn, kwargs, str(log_path)), daemon=True)
    proc.start()
    sender.close()
    try:
        message = receiver.recv() if receiver.poll(timeout) else None
    except EOFError:  # the child died without sending anything
        message = None
    if message is None and proc.is_alive():
        proc.kill()  # only this worker, which we started
        proc.join()
        return Outcome(False, reason=f"timeout after {timeout:g} s", log=str(log_path))
    proc.join()
    if message is None:
        return Outcome(False, reason=_exit_reason(proc.exitcode), log=str(log_path))
    status, payload = message
    if status == "ok":
        return Outcome(True, value=payload, log=str(log_path))
    return Outcome(False, reason=payload, log=str(log_path))


def _child(sender, fn, kwargs, log_path):
    log = open(log_path, "w", buffering=1)
    os.dup2(log.fileno(), 1)  # keep TF/tf2onnx chatter out of the benchmark's stdout
    os.dup2(log.fileno(), 2)
    try:
        result = fn(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
        log.write(traceback.format_exc())
        log.flush()
        sender.send(("error", short_reason(exc)))
    else:
        sender.send(("ok", result))
    finally:
        sender.close()


def _exit_reason(code) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"crashed: {name}{hint}"
    return f"crashed: exit code {code}"


# (regex searched in "Type: message", phrase template). First match wins.
_KNOWN = [
    (r"KeyError: 'keras_tensor", "KeyError 'keras_tensor_N' (Keras 3 Sequential)"),
    (r"No Op registered for (\S+) with domain_version", "unknown op {0}"),
    (r"(\S+) is not a registered function/op", "unknown op {0}"),
    (r"Could not find an implementation for (\w+)", "no onnxruntime kernel for {0}"),
    (r"Required inputs \((\[.*?\])\) are missing", "needs extra inputs {0}"),
]


def short_reason(exc: BaseException, limit: int = 90) -> str:
    """One short phrase for a failure, e.g. ``unsupported: Conv2D, DepthwiseConv2D``."""
    items = getattr(exc, "items", None)
    if type(exc).__name__ == "UnsupportedError" and items:
        classes = sorted({i.class_name for i in items})
        more = f" (+{len(classes) - 4})" if len(classes) > 4 else ""
        return "unsupported: " + ", ".join(classes[:4]) + more
    text = f"{type(exc).__name__}: {str(exc).strip()}"
    # onnxruntime: "[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model from /long/path failed:..."
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : (\w+) : (Load model from \S+ failed:)?", r"\1: ", text)
    for pattern, phrase in _KNOWN:
        match = re.search(pattern, text)
        if match:
            return shorten(phrase.format(*match.groups()), limit)
    return shorten(text, limit)


def shorten(text: str, limit: int = 90) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
