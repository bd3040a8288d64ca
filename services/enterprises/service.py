"""Use cases of the enterprises service.

They take a session, change state and add outbox events; they never commit.
"""

from __future__ import annotations
