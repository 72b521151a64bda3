"""Conversion reports: what was converted how, the final graph, verification, timings, warnings.

``build_report(conversion, ...)`` collects a :class:`Report`; ``write(report, path)`` renders it as
markdown (``.md``) or as a self-contained HTML page (``.html``) chosen by the file suffix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..core.errors import InvalidInputError, OutputWriteError
from .html import render_html
from .markdown import render_markdown
from .model import LayerRow, Report, TensorInfo, build_report, saved_size

RENDERERS = {".md": render_markdown, ".markdown": render_markdown, ".html": render_html, ".htm": render_html}

__all__ = ["Report", "LayerRow", "TensorInfo", "build_report", "write", "render_html", "render_markdown",
           "check_report_path", "saved_size"]


def check_report_path(path) -> Path:
    """``path`` if a report can be written there (known suffix, existing directory), else a one-line
    :class:`InvalidInputError`/:class:`OutputWriteError`."""
    path = Path(path)
    if path.suffix.lower() not in RENDERERS:
        raise InvalidInputError(f"report {path}: unknown format '{path.suffix}' (use .md or .html)")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputWriteError(f"cannot write report {path}: directory {directory} does not exist")
    return path


def write(report: Report, path) -> Path:
    """Render ``report`` by ``path``'s suffix (.md or .html) and write it atomically."""
    path = check_report_path(path)
    text = RENDERERS[path.suffix.lower()](report)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=".kerasonnx-", dir=directory))
        try:
            (tmpdir / path.name).write_text(text, encoding="utf-8")
            os.replace(tmpdir / path.name, path)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot write report {path}: {exc.strerror or exc}") from None
    return path
