"""Bearer API keys, scopes, per-key rate limits (fixed one-second windows in Redis). Shared by both APIs."""
from __future__ import annotations

from flask import Flask, g, request

from app.api.problems import ApiError
from app.config import settings
from app.services import api_keys

# Served without a key: liveness, readiness and the API docs.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/docs"})
ADMIN_PATHS = frozenset({"/metrics"})


def _required_scope() -> str:
    if request.path in ADMIN_PATHS:
        return "admin"
    return "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"


def _is_public() -> bool:
    return request.path in PUBLIC_PATHS or request.path.startswith("/docs/")


def _authenticate() -> None:
    """Who is calling, with which scopes, and within their rate limit (401, 403, 429)."""
    if _is_public():
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    caller = api_keys.authenticate(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    key = caller.key if caller else None
    if key is None:
        raise ApiError("UNAUTHENTICATED", "a valid API key is required: Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": 'Bearer realm="wallet"'})
    g.api_key = key
    scope = _required_scope()
    if not key.allows(scope):
        raise ApiError("INSUFFICIENT_SCOPE", f"this API key lacks the '{scope}' scope",
                       headers={"WWW-Authenticate": f'Bearer realm="wallet", error="insufficient_scope", scope="{scope}"'})
    limit = settings().rate_limit_per_second
    # Counted in Redis, so shared by every API process; Redis away: serve rather than refuse
    # (commands still need it to be queued, and the job rows are durable).
    if limit > 0 and caller.requests_this_second is not None and caller.requests_this_second > limit:
        raise ApiError("RATE_LIMIT", "too many requests for this API key; retry after the Retry-After seconds",
                       headers={"Retry-After": "1"})


def register(app: Flask) -> None:
    """Authenticate and rate-limit every request but the public ones."""
    app.before_request(_authenticate)
    api_keys.seed_from_env(settings().api_keys_spec)
