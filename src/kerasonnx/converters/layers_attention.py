"""layers_attention converters."""

from __future__ import annotations
