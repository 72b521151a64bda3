"""layers_applications converters."""

from __future__ import annotations
