"""Request and response models of the mentoring API (the HTTP contract)."""

from __future__ import annotations
