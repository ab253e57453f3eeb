"""Webhooks: what a notification is called, how it is signed, when it is retried and where it may go.

Pure rules (standard library only). The format and signature are Standard
Webhooks (https://www.standardwebhooks.com): headers `webhook-id`,
`webhook-timestamp` and `webhook-signature` = `v1,` + base64 of HMAC-SHA256
over `{id}.{timestamp}.{body}`, keyed with the base64-decoded secret after
`whsec_`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

JOB_NOTIFICATIONS = {"JOB_SUCCEEDED": "job.succeeded", "JOB_FAILED": "job.failed"}
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
# http(s), a host (no credentials), then a path, query or fragment without whitespace.
URL_PATTERN = "^https?://[^\\s/?#@]+([/?#][^\\s]*)?$"
ROTATION_OVERLAP = timedelta(hours=24)  # the previous secret keeps signing this long after a rotation
DISABLE_AFTER = timedelta(days=5)  # an endpoint whose attempts all failed this long is disabled
ATTEMPT_TIMEOUT_S = 10.0
JITTER = 0.2  # each wait is the schedule's ±20 %
_NAMESPACE = uuid.UUID("5f8c2d0e-7f4b-4e35-9a57-1b0c8e6f3a21")
_METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in practice


def notification_type(history_or_job_type: str) -> str:
    """`TRANSFER_IN` → `wallet.transfer_in`, `WALLET_FUNDED` → `wallet.funded`, `JOB_FAILED` → `job.failed`."""
    if history_or_job_type in JOB_NOTIFICATIONS:
        return JOB_NOTIFICATIONS[history_or_job_type]
    return "wallet." + history_or_job_type.lower().removeprefix("wallet_")


def subscribed(events: list[str], notification: str) -> bool:
    return "*" in events or notification in events


def webhook_id(*source: str) -> str:
    """The message id of a notification: derived from what caused it, so a replayed event keeps its id."""
    return "msg_" + uuid.uuid5(_NAMESPACE, "/".join(source)).hex


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(signing_secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per secret that signs now (two during a rotation), space-separated."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in signing_secrets)


def signing_secrets(secret: str, previous: str | None, previous_expires_at: datetime | None,
                    now: datetime) -> list[str]:
    if previous and previous_expires_at and now < previous_expires_at:
        return [secret, previous]
    return [secret]


def parse_schedule(text: str) -> tuple[int, ...]:
    """WEBHOOK_RETRY_SCHEDULE: seconds to wait before each retry, comma-separated."""
    waits = tuple(int(part) for part in text.split(",") if part.strip())
    if not waits or any(w <= 0 for w in waits):
        raise ValueError("WEBHOOK_RETRY_SCHEDULE must be positive integers, comma-separated")
    return waits


def next_attempt_delay(schedule: tuple[int, ...], attempts_made: int, rng: random.Random | None = None
                       ) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones; None when the schedule is spent."""
    if attempts_made > len(schedule):
        return None
    wait = schedule[attempts_made - 1]
    return wait * (1 + JITTER * (2 * (rng or random).random() - 1))


@dataclass(frozen=True)
class Outcome:
    """What one attempt did to its delivery and its endpoint."""

    status: str  # pending | succeeded | failed
    retry_in_s: float | None
    disable_endpoint: bool


def after_attempt(succeeded: bool, attempts_made: int, schedule: tuple[int, ...], failing_since: datetime | None,
                  now: datetime, rng: random.Random | None = None) -> Outcome:
    if succeeded:
        return Outcome("succeeded", None, False)
    disable = failing_since is not None and now - failing_since >= DISABLE_AFTER
    delay = None if disable else next_attempt_delay(schedule, attempts_made, rng)
    return Outcome("failed" if delay is None else "pending", delay, disable)


class UrlNotAllowed(ValueError):
    """A webhook URL the service will not call."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def parse_url(url: str) -> Target:
    """The scheme, host and port of a webhook URL, or UrlNotAllowed."""
    if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL_LENGTH:
        raise UrlNotAllowed(f"must be a URL of at most {MAX_URL_LENGTH} characters")
    if not re.fullmatch(URL_PATTERN, url):
        raise UrlNotAllowed("must be an http or https URL with a host and no credentials or spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UrlNotAllowed("is not a valid URL") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlNotAllowed("must be an http or https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("must not carry credentials")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def address_refusal(address: str, allow_private: bool) -> str | None:
    """Why an address may not be called (None: it may)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES or ip.is_link_local:
        return f"{ip} is a link-local or cloud metadata address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return f"{ip} is not a unicast address"
    if ip.is_loopback or ip.is_private or ip in _SHARED_ADDRESS_SPACE:
        return None if allow_private else f"{ip} is a loopback or private address"
    return None
