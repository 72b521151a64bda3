"""layers_reshaping converters."""

from __future__ import annotations
