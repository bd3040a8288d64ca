"""Tables of the gateway (its own database): API keys and principals."""

from __future__ import annotations

from shared.db import new_metadata
from shared.migrations import include_kit_tables

metadata = new_metadata()
include_kit_tables(metadata)
