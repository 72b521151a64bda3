"""layers_activation converters."""

from __future__ import annotations
