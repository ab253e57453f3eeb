"""The Wallet API: a Flask application factory (`create_app`)."""
from __future__ import annotations

from flask import Flask

from app.api import batches, health, holds, jobs, movements, operations, transactions, wallets, webhooks
from app.api.base import build_app


def create_app(test_config: dict | None = None) -> Flask:
    return build_app(__name__, "api", [m.bp for m in (health, wallets, movements, holds, transactions, jobs, batches,
                                                  webhooks)],
                     title=operations.TITLE, description=operations.DESCRIPTION, operations=operations.OPERATIONS,
                     test_config=test_config)
