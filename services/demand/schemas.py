"""Request and response models of the demand API (the HTTP contract)."""

from __future__ import annotations
