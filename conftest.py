"""Fixtures shared by every test folder: a real nats-server, real databases."""

pytest_plugins = ["shared.testing.plugin"]
