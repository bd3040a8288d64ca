"""Deployment: the local supervisor behind `make run`, container and cluster files."""
