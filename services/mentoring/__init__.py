"""The mentoring service."""
