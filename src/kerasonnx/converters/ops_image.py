"""ops_image converters."""

from __future__ import annotations
