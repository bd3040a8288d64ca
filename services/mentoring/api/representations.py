"""Where the mentoring service's resources live (their ``Location``)."""

from __future__ import annotations

import uuid

from services.mentoring.api.dependencies import API


def mentor_location(mentor_id: uuid.UUID) -> str:
    return f"{API}/mentors/{mentor_id}"
