"""What both Flask APIs share: request ids, problem+json errors, metrics, API keys, OpenAPI."""
from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, Flask

from app.api import auth, context, openapi, problems
from app.observability import flask_metrics, logs


def build_app(import_name: str, service: str, blueprints: Iterable[Blueprint], *, title: str, description: str,
              operations: dict, test_config: dict | None = None) -> Flask:
    """A Flask app with the shared middleware, the given blueprints and their OpenAPI document."""
    app = Flask(import_name, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, JSON_SORT_KEYS=False)
    if test_config:
        app.config.update(test_config)
    if not app.config.get("TESTING"):
        logs.configure(service)
    app.json.sort_keys = False
    context.register(app)
    problems.register(app)
    flask_metrics.register(app)  # before auth, so refused requests are counted too
    auth.register(app)
    for bp in blueprints:
        app.register_blueprint(bp)
    openapi.register(app, title, description, operations)
    return app
