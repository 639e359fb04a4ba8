"""Typed clients for the services the orchestrator calls."""
