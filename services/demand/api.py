"""HTTP routes of the demand service: validation and authorization only, no SQL."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
