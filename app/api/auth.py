"""Bearer API keys, scopes, per-key rate limits. Shared by the Wallet and History APIs."""
from __future__ import annotations

from flask import Flask, g, request
from flask_limiter import Limiter

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
    if _is_public():
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    key = api_keys.authenticate(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if key is None:
        raise ApiError("UNAUTHENTICATED", "a valid API key is required: Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": 'Bearer realm="wallet"'})
    g.api_key = key
    scope = _required_scope()
    if not key.allows(scope):
        raise ApiError("INSUFFICIENT_SCOPE", f"this API key lacks the '{scope}' scope",
                       headers={"WWW-Authenticate": f'Bearer realm="wallet", error="insufficient_scope", scope="{scope}"'})


def _rate_limit_key() -> str:
    key = g.get("api_key")
    return key.id if key else (request.remote_addr or "anonymous")


def register(app: Flask) -> None:
    """Authenticate every request (before the rate limiter, which counts per key)."""
    s = settings()
    app.before_request(_authenticate)
    limiter = Limiter(
        key_func=_rate_limit_key,
        app=app,
        default_limits=[f"{s.rate_limit_per_second} per second"] if s.rate_limit_per_second > 0 else [],
        default_limits_exempt_when=_is_public,
        storage_uri=s.redis_url,
        strategy="fixed-window",
        headers_enabled=False,  # its Retry-After would sit on every response; 429s get ours
        swallow_errors=True,  # Redis away: serve rather than refuse (commands still need Redis to be queued)
        key_prefix="wallet-rate",
    )
    app.extensions["wallet_limiter"] = limiter
    api_keys.seed_from_env(s.api_keys_spec)
