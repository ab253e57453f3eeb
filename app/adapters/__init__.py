"""Adapters to the outside world: PostgreSQL, Redis, Kafka, Celery."""
