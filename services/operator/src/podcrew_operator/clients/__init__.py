"""Typed HTTP clients: the orchestrator's public API and the Kubernetes API."""
