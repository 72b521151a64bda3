"""layers_recurrent converters."""

from __future__ import annotations
