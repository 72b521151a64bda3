"""Command-line options for what a command tells the user besides its result line: log verbosity
(``-v``/``-vv``/``--quiet``), the progress display and ``--report PATH`` files (.md or .html)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path


def add_output_options(parser, *, reports: bool = True) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log each stage on stderr (-v), and each layer (-vv)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only errors on stderr (no warnings, no progress)")
    if reports:
        parser.add_argument("--report", action="append", default=[], metavar="PATH",
                            help="write a conversion report: PATH.md (markdown) or PATH.html (a self-contained "
                                 "page with a picture of the graph); repeatable")


def start(args):
    """Configure logging from ``args`` and return the :class:`~kerasonnx.logs.Progress` display.

    Report paths are checked here, before any work, so that a typo fails in a second."""
    from ..logs import Progress, configure_logging
    from ..report import check_report_path

    configure_logging(args.verbose, args.quiet)
    for path in getattr(args, "report", None) or []:
        check_report_path(path)
    # a worker of a batch conversion shares the terminal with the others: no progress line there
    return Progress(enabled=not args.quiet and multiprocessing.parent_process() is None)


def refuse_batch_reports(args) -> None:
    from ..core.errors import InvalidInputError

    if getattr(args, "report", None):
        raise InvalidInputError("--report needs a single model (convert the model alone to get its report)")


def write_reports(args, result, *, verification=None, seconds=None, warnings=(), output: Path | None = None) -> None:
    """Write each ``--report`` for ``result`` (an ``api.Conversion`` or an ONNX model)."""
    import logging

    from ..report import build_report, saved_size, write

    if not getattr(args, "report", None):
        return
    file_size = saved_size(output) if output is not None and output.exists() else None
    # the conversion's own timings split "convert" into conversion and optimisation
    seconds = {**(seconds or {}), **(getattr(result, "seconds", None) or {})}
    report = build_report(result, source=args.model, verification=verification, seconds=seconds,
                          warnings=warnings, file_size=file_size)
    for path in args.report:
        write(report, path)
        logging.getLogger(__name__).info("report written to %s", path)
