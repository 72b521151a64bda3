"""layers_conv converters."""

from __future__ import annotations
