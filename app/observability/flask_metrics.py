"""HTTP metrics and the /metrics route for a Flask API."""
from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from app.observability import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_endpoint():
    body = metrics.render([metrics.SystemGaugesCollector()])
    # The text format generate_latest writes; `content_type` is sent as is (`mimetype` would add a second charset).
    return Response(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)


def register(app: Flask) -> None:
    """Count and time every request by route; serve /metrics (admin key, see app.api.auth)."""

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _record(response):
        started = g.pop("metrics_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
            metrics.HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        return response

    app.register_blueprint(bp)
