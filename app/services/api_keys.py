"""API keys: bearer tokens stored hashed, each with a tenant and scopes."""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass

import redis
from sqlalchemy import text

from app.adapters import redis_client
from app.adapters.db import engine

log = logging.getLogger(__name__)

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


# Every change to the keys (create, re-scope, revoke) writes a fresh random value
# here after its commit. API processes cache live keys only while the value they
# saw is unchanged, so a revocation takes effect on the next request everywhere,
# and the cache saves a PostgreSQL round trip (a pool checkout) per request.
KEYS_EPOCH = "wallet:api-keys:epoch"
CACHE_TTL_S = 30.0  # bound on staleness if a key is changed behind the CLI's back (plain SQL)
CACHE_MAX = 10_000

_cache: dict = {"pid": None, "epoch": None, "keys": {}}


@dataclass(frozen=True)
class Caller:
    key: ApiKey | None  # None: unknown or revoked
    requests_this_second: int | None  # for the rate limit; None when Redis did not answer


def authenticate(token: str) -> Caller:
    """The live key for a token, and how many requests it made in the current second.

    One Redis round trip reads the keys' epoch and counts the request (a
    fixed one-second window per token, so per key); a PostgreSQL query runs
    only when this process has no fresh cached key for the token.
    """
    digest = token_hash(token)
    epoch, count = _epoch_and_count(digest)
    keys = _cached_keys(epoch) if count is not None else None
    if keys is not None:
        hit = keys.get(digest)
        if hit is not None and time.monotonic() - hit[1] < CACHE_TTL_S:
            return Caller(hit[0], count)
    with engine().connect() as conn:
        row = conn.execute(text(
            "SELECT id::text, tenant_id, scopes FROM api_keys WHERE token_hash = :h AND revoked_at IS NULL"),
            {"h": digest}).first()
    key = ApiKey(row.id, row.tenant_id, frozenset(row.scopes)) if row else None
    if key is not None and keys is not None:
        if len(keys) >= CACHE_MAX:
            keys.clear()
        keys[digest] = (key, time.monotonic())
    return Caller(key, count)


RATE_PREFIX = "wallet-rate:"


def _epoch_and_count(digest: str) -> tuple[bytes | None, int | None]:
    """(keys epoch, requests of this token in this second); (None, None) if Redis is away."""
    window = RATE_PREFIX + digest[:32] + ":" + str(int(time.time()))
    try:
        pipe = redis_client.client().pipeline(transaction=False)
        pipe.get(KEYS_EPOCH).incr(window).expire(window, 2)
        epoch, count, _ = pipe.execute()
    except redis.RedisError:
        return None, None
    return epoch, count


def _cached_keys(epoch: bytes | None) -> dict:
    """This process's cache of live keys, emptied whenever the epoch it saw moved."""
    if _cache["pid"] != os.getpid() or _cache["epoch"] != epoch:
        _cache.update(pid=os.getpid(), epoch=epoch, keys={})
    return _cache["keys"]


def _keys_changed() -> None:
    """Invalidate every API process's key cache (after the change committed)."""
    try:
        redis_client.client().set(KEYS_EPOCH, uuid.uuid4().hex)
    except redis.RedisError:
        log.warning("could not reach Redis: API processes may accept the old key state for up to %.0f s",
                    CACHE_TTL_S)


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
        key_id = conn.execute(text("""
            INSERT INTO api_keys (id, token_hash, prefix, tenant_id, scopes, name)
            VALUES (:id, :h, :prefix, :tenant, :scopes, :name)
            ON CONFLICT (token_hash) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, scopes = EXCLUDED.scopes
            RETURNING id::text
        """), {"id": str(uuid.uuid4()), "h": token_hash(token), "prefix": token[:8], "tenant": tenant_id,
               "scopes": sorted(set(scopes)), "name": name}).scalar()
    _keys_changed()
    return key_id


def create_key(tenant_id: str, scopes: list[str], name: str | None = None) -> tuple[str, str]:
    """A new random key; returns (id, token). The token is shown once and never stored."""
    token = "wk_" + secrets.token_urlsafe(32)
    return store_key(token, tenant_id, scopes, name), token


def revoke_key(key_id_or_prefix: str) -> int:
    """Revoke by id or token prefix; returns how many keys were revoked."""
    with engine().begin() as conn:
        revoked = conn.execute(text("""
            UPDATE api_keys SET revoked_at = now()
             WHERE revoked_at IS NULL AND (id::text = :k OR prefix = :k)
        """), {"k": key_id_or_prefix}).rowcount
    _keys_changed()
    return revoked


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
