"""Per-request context: request id, caller's tenant, JSON body parsing."""
from __future__ import annotations

import json
import re
import uuid

from flask import Flask, g, request

from app.api.problems import ApiError
from app.observability import logs

_PRINTABLE = re.compile(r"\A[\x21-\x7e]{1,200}\Z")


def request_id() -> str:
    return g.request_id


def _api_key():
    key = g.get("api_key")
    if key is None:  # only public routes run without a key, and they never ask
        raise ApiError("UNAUTHENTICATED", "a valid API key is required")
    return key


def current_tenant() -> str | None:
    """The tenant whose data this request may see; None for an admin key, which sees every tenant."""
    key = _api_key()
    return None if key.is_admin else key.tenant_id


def owner_tenant() -> str:
    """The tenant that owns what this request creates (jobs, wallets, idempotency keys)."""
    return _api_key().tenant_id


def json_body() -> object:
    """The parsed JSON body; an empty body reads as {}. Malformed JSON is a 400."""
    if "json_body" not in g:  # parsed once per request: schema load and idempotency fingerprint
        raw = request.get_data(cache=True)
        try:
            g.json_body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError("MALFORMED_JSON", "the request body is not valid JSON") from e
    return g.json_body


def register(app: Flask) -> None:
    @app.before_request
    def _assign_request_id():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _PRINTABLE.match(incoming) else str(uuid.uuid4())
        logs.request_id_var.set(g.request_id)

    @app.after_request
    def _echo_request_id(response):
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        return response
