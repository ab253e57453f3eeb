"""The read side: Kafka events → projector → history tables → History API (no Flask at import)."""
