"""Test fixtures for Seedbed: a real nats-server, real SQLite and PostgreSQL databases."""
