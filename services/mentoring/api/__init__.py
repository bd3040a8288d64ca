"""HTTP routes of the mentoring service: validation and authorization only, no SQL; one module
per subject.

Who may do what is in ``access.py``.
"""

from __future__ import annotations

from fastapi import APIRouter

from services.mentoring.api import mentors, sessions, slots

router = APIRouter()
# In this order: a route of fixed path (/mentors/recommendations) before /mentors/{mentor_id}.
for subject in (mentors, slots, sessions):
    router.include_router(subject.router)
