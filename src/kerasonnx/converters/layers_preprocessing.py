"""layers_preprocessing converters."""

from __future__ import annotations
