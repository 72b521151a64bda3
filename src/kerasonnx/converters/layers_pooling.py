"""layers_pooling converters."""

from __future__ import annotations
