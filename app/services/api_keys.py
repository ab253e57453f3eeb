"""API keys: bearer tokens stored hashed, each with a tenant and scopes."""
from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import text

from app.adapters.db import engine

SCOPES = ("read", "write", "admin")


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


class InvalidKeySpec(ValueError):
    """A WALLET_API_KEYS entry that is not TOKEN:TENANT:SCOPES."""


def token_hash(token: str) -> str:
    # Tokens are long random strings, so a fast hash is enough (as for GitHub tokens).
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(token: str) -> ApiKey | None:
    """The live key for a token, or None (unknown or revoked)."""
    with engine().connect() as conn:
        row = conn.execute(text(
            "SELECT id::text, tenant_id, scopes FROM api_keys WHERE token_hash = :h AND revoked_at IS NULL"),
            {"h": token_hash(token)}).first()
    return ApiKey(row.id, row.tenant_id, frozenset(row.scopes)) if row else None


def _validate(tenant_id: str, scopes: list[str]) -> None:
    if not tenant_id or not tenant_id.isprintable() or len(tenant_id) > 100:
        raise InvalidKeySpec(f"bad tenant {tenant_id!r}")
    unknown = set(scopes) - set(SCOPES)
    if not scopes or unknown:
        raise InvalidKeySpec(f"scopes must be among {', '.join(SCOPES)}; got {scopes}")


def store_key(token: str, tenant_id: str, scopes: list[str], name: str | None = None) -> str:
    """Store (or update the tenant and scopes of) a key; a revoked key stays revoked. Returns its id."""
    _validate(tenant_id, scopes)
    with engine().begin() as conn:
        return conn.execute(text("""
            INSERT INTO api_keys (id, token_hash, prefix, tenant_id, scopes, name)
            VALUES (:id, :h, :prefix, :tenant, :scopes, :name)
            ON CONFLICT (token_hash) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, scopes = EXCLUDED.scopes
            RETURNING id::text
        """), {"id": str(uuid.uuid4()), "h": token_hash(token), "prefix": token[:8], "tenant": tenant_id,
               "scopes": sorted(set(scopes)), "name": name}).scalar()


def create_key(tenant_id: str, scopes: list[str], name: str | None = None) -> tuple[str, str]:
    """A new random key; returns (id, token). The token is shown once and never stored."""
    token = "wk_" + secrets.token_urlsafe(32)
    return store_key(token, tenant_id, scopes, name), token


def revoke_key(key_id_or_prefix: str) -> int:
    """Revoke by id or token prefix; returns how many keys were revoked."""
    with engine().begin() as conn:
        return conn.execute(text("""
            UPDATE api_keys SET revoked_at = now()
             WHERE revoked_at IS NULL AND (id::text = :k OR prefix = :k)
        """), {"k": key_id_or_prefix}).rowcount


def list_keys() -> list[dict]:
    with engine().connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT id::text, prefix, tenant_id, scopes, name, created_at, revoked_at FROM api_keys ORDER BY created_at"
        )).mappings()]


def parse_spec(spec: str) -> list[tuple[str, str, list[str]]]:
    """WALLET_API_KEYS: comma-separated TOKEN:TENANT:SCOPES with scopes joined by |."""
    keys = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or not parts[0]:
            raise InvalidKeySpec(f"expected TOKEN:TENANT:SCOPES, got an entry with {len(parts)} parts")
        token, tenant, scopes = parts
        scope_list = [s for s in scopes.split("|") if s]
        _validate(tenant, scope_list)
        keys.append((token, tenant, scope_list))
    return keys


def seed_from_env(spec: str | None) -> int:
    """Store the keys given in WALLET_API_KEYS (idempotent)."""
    if not spec:
        return 0
    keys = parse_spec(spec)
    for token, tenant, scopes in keys:
        store_key(token, tenant, scopes, name="WALLET_API_KEYS")
    return len(keys)
