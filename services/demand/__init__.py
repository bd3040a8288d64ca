"""The demand service."""
