"""Liveness and readiness."""
from __future__ import annotations

from flask import Blueprint, jsonify

from app.services import readiness

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    return jsonify(status="ok")


@bp.get("/ready")
def ready():
    """200 when PostgreSQL, Redis and Kafka answer and a worker is alive; else 503 naming what is down."""
    checks = readiness.check_dependencies()
    down = sorted(name for name, ok in checks.items() if not ok)
    body = {"status": "ok" if not down else "unavailable", "checks": {k: "ok" if v else "down" for k, v in checks.items()}}
    if down:
        body["down"] = down
    return jsonify(body), 200 if not down else 503
