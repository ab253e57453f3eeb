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
    """200 when PostgreSQL, Redis and Kafka answer and a worker is alive; else 503 naming what is down.

    `pipeline` says whether events flow (relay, history worker); a stall there does not stop this API
    from taking commands, so it is reported without changing the status (the History API's /ready,
    whose data it makes stale, answers 503 for it).
    """
    checks = readiness.check_dependencies()
    down = sorted(name for name, ok in checks.items() if not ok)
    body = {"status": "ok" if not down else "unavailable", "checks": {k: "ok" if v else "down" for k, v in checks.items()},
            "pipeline": readiness.pipeline_status()}
    if down:
        body["down"] = down
    return jsonify(body), 200 if not down else 503
