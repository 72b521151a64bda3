"""Logging set-up, warning capture and the progress display of long conversions.

kerasonnx logs through the standard ``logging`` module under the ``"kerasonnx"`` logger (each module
uses ``logging.getLogger(__name__)``). Libraries calling kerasonnx configure it like any other
logger; the command line calls :func:`configure_logging` (``-v`` INFO, ``-vv`` DEBUG, ``--quiet``
ERROR). Everything goes to stderr: stdout keeps its one result line.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from typing import Callable, Iterator, TextIO

LOGGER_NAME = "kerasonnx"
logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int, str], None]
"""``callback(stage, done, total, item)``: e.g. ``("convert", 12, 176, "conv2_block1_1_conv")``."""

_CLEAR_LINE = "\r\x1b[K"
_VERBS = {"load": "loading", "convert": "converting", "optimize": "optimizing", "verify": "verifying",
          "save": "saving", "report": "writing report"}
_live_line: "Progress | None" = None  # the progress display currently drawn on a terminal, if any


def verbosity_level(verbose: int = 0, quiet: bool = False) -> int:
    """The log level of the command line's ``-v`` count and ``--quiet`` flag."""
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


class _StderrHandler(logging.StreamHandler):
    """Writes ``kerasonnx: warning: ...`` lines to stderr, first erasing a live progress line."""

    def __init__(self):
        super().__init__(sys.stderr)
        self.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        if _live_line is not None:
            _live_line.erase()
        super().emit(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"kerasonnx: {record.levelname.lower()}: {record.getMessage()}"


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Send kerasonnx's log records to stderr at the level of ``-v``/``--quiet`` (idempotent).

    The logger itself stays at WARNING or below so that :func:`capture_warnings` still sees
    warnings when ``--quiet`` hides them.
    """
    level = verbosity_level(verbose, quiet)
    root = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(min(level, logging.WARNING))
    root.propagate = False


class _ListHandler(logging.Handler):
    def __init__(self, messages: list[str]):
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def capture_warnings() -> Iterator[list[str]]:
    """Collect kerasonnx log warnings and Python warnings raised inside the block (for reports).

    Python warnings are recorded instead of printed; the list is filled (duplicates counted,
    ``"... (x3)"``) when the block ends.
    """
    collected: list[str] = []
    log = logging.getLogger(LOGGER_NAME)
    handler = _ListHandler(collected)
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.WARNING:
        log.setLevel(logging.WARNING)
    messages: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
    finally:
        log.removeHandler(handler)
        collected.extend(f"{w.category.__name__}: {w.message}" for w in caught if not _is_float_noise(w))
        messages.extend(_count_duplicates(collected))


def _is_float_noise(warning) -> bool:
    """numpy's "overflow encountered in matmul": tracing runs layers on placeholder values."""
    return issubclass(warning.category, RuntimeWarning) and " encountered in " in str(warning.message)


def _count_duplicates(messages: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    for message in messages:
        counts[message] = counts.get(message, 0) + 1
    return [m if n == 1 else f"{m} (x{n})" for m, n in counts.items()]


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Progress of a conversion's stages, on stderr.

    On a terminal: one line redrawn in place (``converting 34/176 layers  conv2_block1_1_conv``),
    shown only once a stage has run ``delay`` seconds and erased when done. Elsewhere (pipes, CI
    logs): no progress line, only INFO log lines (stage start and end, and the count every
    ``log_every`` seconds). ``enabled=False`` (``--quiet``) shows nothing. ``seconds`` holds
    the duration of each stage run with :meth:`stage`.
    """

    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None, delay: float = 0.5,
                 log_every: float = 10.0, min_redraw: float = 0.1):
        self.enabled = enabled
        self._stream = stream
        self.delay, self.log_every, self.min_redraw = delay, log_every, min_redraw
        self.seconds: dict[str, float] = {}
        self._stage = ""
        self._stage_started = self._last_log = self._last_draw = 0.0
        self._drawn = False

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    @property
    def live(self) -> bool:
        return self.enabled and _is_terminal(self.stream)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (``load``, ``convert``, ``verify``, ``save``) and show it while it runs."""
        started = time.perf_counter()
        self._begin(name)
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started
            self.erase()
        logger.info("%s done in %.2f s", name, self.seconds[name])

    def _begin(self, name: str) -> None:
        self._stage = name
        self._stage_started = self._last_log = time.perf_counter()
        logger.info("%s ...", _VERBS.get(name, name))
        self._draw(_VERBS.get(name, name))

    def __call__(self, stage: str, done: int, total: int, item: str = "") -> None:
        """The :data:`ProgressCallback` handed to the converter."""
        if stage != self._stage:
            self._begin(stage)
        now = time.perf_counter()
        if not self.live and now - self._last_log >= self.log_every:
            self._last_log = now
            logger.info("%s: %d/%d layers", stage, done, total)
        if now - self._last_draw >= self.min_redraw or done == total:
            verb = _VERBS.get(stage, stage)
            self._draw(f"{verb} {done}/{total} layers  {item}" if total else verb)

    def _draw(self, text: str) -> None:
        global _live_line
        now = time.perf_counter()
        if not self.live or now - self._stage_started < self.delay:
            return
        width = 79
        self.stream.write(_CLEAR_LINE + text[:width])
        self.stream.flush()
        self._drawn, self._last_draw = True, now
        _live_line = self

    def erase(self) -> None:
        """Remove the progress line (before other output goes to the terminal)."""
        global _live_line
        if self._drawn:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._drawn = False
        if _live_line is self:
            _live_line = None
