"""Command line: ``kerasonnx COMMAND ...`` (also ``python -m kerasonnx``).

Each command lives in its own module exposing ``add_parser(subparsers)`` and ``run(args) -> int``.

Exit codes: 0 success; 1 other kerasonnx error; 2 bad arguments or input; 3 model file cannot be
loaded; 4 unsupported layers/ops; 5 converter failure (a bug); 6 verification failed; 7 output cannot
be written; 70 unexpected internal error (rerun with --debug for the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings

from . import convert, doctor, verify

EXIT_INTERNAL = 70
COMMANDS = {"convert": convert, "verify": verify, "doctor": doctor}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerasonnx", description="Convert Keras models to ONNX.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    for module in COMMANDS.values():
        command = module.add_parser(sub)
        command.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def entry() -> int:
    """The ``kerasonnx`` command (and ``python -m kerasonnx``): :func:`main` with native stderr
    silenced unless ``--debug``. TensorFlow's C++ runtime writes INFO lines straight to file
    descriptor 2 when Keras imports it (``TF_CPP_MIN_LOG_LEVEL`` no longer stops them all), which would
    break the one-line output contract; kerasonnx's own messages go to a duplicate of the real stderr."""
    if "--debug" in sys.argv[1:]:
        return main()
    with _python_only_stderr():
        return main()


@contextlib.contextmanager
def _python_only_stderr():
    sys.stderr.flush()
    real = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    saved, sys.stderr = sys.stderr, os.fdopen(real, "w", buffering=1)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)
        sys.stderr.close()
        sys.stderr = saved


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from .. import __version__

        print(f"kerasonnx {__version__}")
        return 0
    if args.command not in COMMANDS:
        parser.print_help()
        return 2
    if not args.debug:  # warnings from Keras or model code would break the one-line output contract
        warnings.filterwarnings("ignore")
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print("kerasonnx: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure becomes one line (and a traceback with --debug)
        return report_failure(exc, debug=args.debug)


def report_failure(exc: BaseException, *, debug: bool) -> int:
    """Print ``exc`` as one line on stderr (plus the traceback with ``debug``); return the exit code."""
    from ..core.errors import KerasOnnxError

    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, KerasOnnxError):
        print(f"kerasonnx: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"kerasonnx: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
          file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(entry())
