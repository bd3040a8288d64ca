"""The `seedbed` command: the gateway from a terminal (it talks HTTP only)."""
