"""Metrics and structured logs, shared by every process of the system."""
