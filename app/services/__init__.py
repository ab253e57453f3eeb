"""Use cases: submitting commands, executing them, and the read queries."""
