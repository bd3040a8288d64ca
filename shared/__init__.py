"""Seedbed's small generic kit: settings, database, events, NATS, outbox, inbox, HTTP plumbing.

It holds no business rule and imports no service or gateway module.
"""
