"""ops_nn converters."""

from __future__ import annotations
