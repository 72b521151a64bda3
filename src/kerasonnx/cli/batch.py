"""Batch conversion: ``kerasonnx convert DIR_OR_GLOB... [-o OUTDIR] [--jobs N]``.

Each model is converted by the single-model ``convert`` command in a worker process (spawned, so a
crash or a leak in one model's code cannot affect the others); failures do not stop the batch. A
summary table (model, status, time, message) is printed at the end. Exit code: 0 when every model
converted; otherwise the failed models' exit code when they all share one, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import sys
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MODEL_SUFFIXES = (".keras", ".h5")
_GLOB_CHARS = set("*?[")


@dataclass
class Outcome:
    model: str
    exit_code: int
    seconds: float
    message: str

    @property
    def status(self) -> str:
        return "ok" if self.exit_code == 0 else f"failed ({self.exit_code})"


def _is_glob(text: str) -> bool:
    return bool(_GLOB_CHARS & set(text)) and not Path(text).exists()


def _is_model_directory(path: Path) -> bool:
    from ..loading.files import sniff

    return path.is_dir() and sniff(path) != "savedmodel"  # a SavedModel dir is one (refused) model


def is_batch(models: list[str]) -> bool:
    """Several models, a directory of models or a glob pattern."""
    return len(models) > 1 or any(_is_model_directory(Path(m)) or _is_glob(m) for m in models)


def expand_models(patterns: list[str]) -> list[Path]:
    """Model files named by ``patterns`` (files, directories = their .keras/.h5 files, globs), in
    order, each once. A missing file stays in the list: its conversion fails and is reported."""
    from ..core.errors import InvalidInputError

    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if _is_model_directory(path):
            matches = sorted(p for p in path.iterdir() if p.suffix in MODEL_SUFFIXES and p.is_file())
        elif _is_glob(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern) if not Path(p).is_dir())
        else:
            matches = [path]
        if not matches:
            raise InvalidInputError(f"no .keras/.h5 model files in {pattern}")
        found.extend(matches)
    return list(dict.fromkeys(found))


def output_paths(models: list[Path], output_dir: str | None) -> list[Path]:
    """``OUTDIR/<model stem>.onnx`` (created if needed), or beside each model without ``-o``."""
    from ..core.errors import InvalidInputError, OutputWriteError

    directory = Path(output_dir) if output_dir else None
    if directory is not None:
        if directory.exists() and not directory.is_dir():
            raise OutputWriteError(f"-o {directory}: with several models, -o must be a directory")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputWriteError(f"cannot create {directory}: {exc.strerror or exc}") from None
    outputs = [(directory or m.parent) / (m.stem + ".onnx") for m in models]
    clashes = sorted({str(o) for o in outputs if outputs.count(o) > 1})
    if clashes:
        raise InvalidInputError(f"several models would be written to the same file: {', '.join(clashes)}")
    return outputs


def convert_one(options: dict, model: str, output: str) -> Outcome:
    """Run the single-model convert command (in a worker process); never raises."""
    from . import EXIT_INTERNAL, convert
    from ..core.errors import KerasOnnxError

    started = time.perf_counter()
    args = argparse.Namespace(**{**options, "model": model, "output": output})
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            if not options.get("debug"):
                warnings.simplefilter("ignore")
            code = convert.run(args)
        lines = printed.getvalue().strip().splitlines()
        message = lines[-1].split(": ", 1)[-1] if lines else ""
    except Exception as exc:  # every failure becomes one row of the summary
        if options.get("debug"):
            traceback.print_exception(exc)
        if isinstance(exc, KerasOnnxError):
            code, message = exc.exit_code, str(exc)
        else:
            code, message = EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)"
    return Outcome(model, code, time.perf_counter() - started, message)


def default_jobs() -> int:
    return min(2, os.cpu_count() or 1)


def run_batch(args) -> int:
    """Convert every model named by ``args.model``; print the summary table; return the exit code."""
    import multiprocessing

    from ..core.errors import InvalidInputError

    jobs = args.jobs or default_jobs()
    if jobs < 1:
        raise InvalidInputError(f"--jobs must be at least 1, got {jobs}")
    models = expand_models(args.model)
    outputs = output_paths(models, args.output)
    options = {k: v for k, v in vars(args).items() if k not in ("model", "output")}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(models)), mp_context=context) as pool:
        futures = [pool.submit(convert_one, options, str(m), str(o)) for m, o in zip(models, outputs)]
        outcomes = [_result(future, str(model)) for future, model in zip(futures, models)]
    print(summary_table(outcomes))
    failed = [o for o in outcomes if o.exit_code != 0]
    if not failed:
        return 0
    print(f"kerasonnx: error: {len(failed)} of {len(outcomes)} model(s) failed to convert", file=sys.stderr)
    return batch_exit_code(failed)


def _result(future, model: str) -> Outcome:
    from . import EXIT_INTERNAL

    try:
        return future.result()
    except Exception as exc:  # the worker process died (BrokenProcessPool) or could not start
        return Outcome(model, EXIT_INTERNAL, 0.0, f"worker process failed: {type(exc).__name__}: {exc}")


def batch_exit_code(failed: list[Outcome]) -> int:
    """The failed models' common exit code, or 1 when they failed for different reasons."""
    codes = {o.exit_code for o in failed}
    return codes.pop() if len(codes) == 1 else 1


def summary_table(outcomes: list[Outcome]) -> str:
    rows = [("model", "status", "time", "message")]
    rows += [(o.model, o.status, f"{o.seconds:.2f} s", o.message) for o in outcomes]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    converted = sum(o.exit_code == 0 for o in outcomes)
    return "\n".join(lines + [f"{converted} of {len(outcomes)} model(s) converted"])
