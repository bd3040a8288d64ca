"""Request and response models of the enterprises API (the HTTP contract)."""

from __future__ import annotations
