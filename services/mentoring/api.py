"""HTTP routes of the mentoring service: validation and authorization only, no SQL."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
