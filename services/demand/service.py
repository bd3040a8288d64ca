"""Use cases of the demand service.

They take a session, change state and add outbox events; they never commit.
"""

from __future__ import annotations
