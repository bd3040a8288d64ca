"""Use cases of the mentoring service.

They take a session, change state and add outbox events; they never commit.
"""

from __future__ import annotations
