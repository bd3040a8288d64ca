"""The enterprises service is up, ready, and refuses requests that did not come through the gateway."""

from __future__ import annotations

from shared.testing.basics import ServiceBasics


class TestServiceBasics(ServiceBasics):
    pass
