"""Developer and operations tooling (not part of the deployed application)."""
