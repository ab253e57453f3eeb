"""The Wallet API: a Flask application factory (`create_app`)."""
from __future__ import annotations

from flask import Flask

from app.observability import flask_metrics, logs

from app.api import auth, context, health, holds, jobs, movements, openapi, operations, problems, transactions, wallets


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, JSON_SORT_KEYS=False)
    if test_config:
        app.config.update(test_config)
    if not app.config.get("TESTING"):
        logs.configure("api")
    app.json.sort_keys = False
    context.register(app)
    problems.register(app)
    flask_metrics.register(app)  # before auth, so refused requests are counted too
    auth.register(app)
    for module in (health, wallets, movements, holds, transactions, jobs):
        app.register_blueprint(module.bp)
    openapi.register(app, operations.TITLE, operations.DESCRIPTION, operations.OPERATIONS)
    return app
