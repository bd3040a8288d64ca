"""The gateway: the one public API (auth, routing, composition, webhooks, SSE)."""
