"""layers_merging converters."""

from __future__ import annotations
