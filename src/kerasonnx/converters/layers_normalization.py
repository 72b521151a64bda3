"""layers_normalization converters."""

from __future__ import annotations
