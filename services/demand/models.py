"""Tables of the demand service (its own database)."""

from __future__ import annotations

from shared.db import new_metadata
from shared.migrations import include_kit_tables

metadata = new_metadata()
include_kit_tables(metadata)
