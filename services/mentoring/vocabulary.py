"""Words the mentoring service's schemas, tables and events share."""

from __future__ import annotations

from typing import Literal

# A session in this state holds its time: it can collide with another one.
BOOKED = "booked"
CANCELLED = "cancelled"
COMPLETED = "completed"
NO_SHOW = "no_show"
SESSION_STATUSES = (BOOKED, CANCELLED, COMPLETED, NO_SHOW)
SessionStatus = Literal["booked", "cancelled", "completed", "no_show"]
# Sessions that used the mentor's capacity (daily and weekly limits, active mentees).
COUNTED_STATUSES = (BOOKED, COMPLETED, NO_SHOW)

AbsentParty = Literal["enterprise", "mentor"]
