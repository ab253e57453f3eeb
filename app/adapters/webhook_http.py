"""HTTP to webhook receivers: resolve the host, then POST to the very address that was checked.

A name checked at one moment may resolve elsewhere the next (DNS rebinding), so
the request goes to the checked IP address, with the URL's host in `Host` and,
for https, as the TLS server name (SNI and certificate verification). No
redirect is followed, no proxy from the environment is used, and every phase
of the request (connect, write, read) is bounded.
"""
from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

MAX_ERROR_LENGTH = 500
_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the CA bundle (~17 ms of CPU each time)."""
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = httpx.create_ssl_context()
        return _tls


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses (an IP literal resolves to itself); OSError when it does not resolve."""
    return list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


@dataclass(frozen=True)
class Answer:
    status_code: int | None  # None: no HTTP answer (refused, timed out, TLS error, ...)
    error: str | None


def post(url: str, address: str, headers: dict[str, str], body: bytes, timeout_s: float) -> Answer:
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host, parts.path or "/",
                         parts.query, ""))
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False, verify=_tls_context()) as client:
            request = client.build_request("POST", pinned, content=body, extensions=extensions,
                                           headers={**headers, "Host": host_header,
                                                    "Content-Type": "application/json",
                                                    "User-Agent": "wallet-webhooks/1"})
            response = client.send(request)
            return Answer(response.status_code, None if response.is_success else f"HTTP {response.status_code}")
    except httpx.HTTPError as e:
        return Answer(None, f"{type(e).__name__}: {e}"[:MAX_ERROR_LENGTH])
