"""The gateway's own endpoints (keys, principal, webhooks, event stream, composite views)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
