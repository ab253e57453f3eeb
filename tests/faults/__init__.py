"""Entry points that run a service with a fault built in, for the tests that need one (never used in production)."""
