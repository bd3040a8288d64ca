"""The enterprises service."""
