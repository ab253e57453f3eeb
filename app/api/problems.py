"""Errors as RFC 9457 problem details; the one table from error code to HTTP status."""
from __future__ import annotations

import logging

from flask import Flask, Response, json
from marshmallow import ValidationError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from app.domain.errors import WalletError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# code -> (HTTP status, title)
PROBLEMS: dict[str, tuple[int, str]] = {
    "MALFORMED_JSON": (400, "Malformed JSON"),
    "UNAUTHENTICATED": (401, "Authentication required"),
    "INSUFFICIENT_SCOPE": (403, "Insufficient scope"),
    "NOT_FOUND": (404, "Not found"),
    "WALLET_NOT_FOUND": (404, "Wallet not found"),
    "JOB_NOT_FOUND": (404, "Job not found"),
    "BATCH_NOT_FOUND": (404, "Batch not found"),
    "HOLD_NOT_FOUND": (404, "Hold not found"),
    "TRANSACTION_NOT_FOUND": (404, "Transaction not found"),
    "WEBHOOK_ENDPOINT_NOT_FOUND": (404, "Webhook endpoint not found"),
    "WEBHOOK_DELIVERY_NOT_FOUND": (404, "Webhook delivery not found"),
    "METHOD_NOT_ALLOWED": (405, "Method not allowed"),
    "JOB_NOT_CANCELABLE": (409, "Job not cancelable"),
    "PRECONDITION_FAILED": (412, "Precondition failed"),
    "PAYLOAD_TOO_LARGE": (413, "Payload too large"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "Unsupported media type"),
    "VALIDATION_FAILED": (422, "Validation failed"),
    "IDEMPOTENCY_KEY_REUSED": (422, "Idempotency key reused"),
    "WEBHOOK_URL_NOT_ALLOWED": (422, "Webhook URL not allowed"),
    "RATE_LIMIT": (429, "Too many requests"),
    "INTERNAL_ERROR": (500, "Internal error"),
    "SERVICE_UNAVAILABLE": (503, "Service unavailable"),
}


class ApiError(Exception):
    """An error to answer with, by its stable code."""

    def __init__(self, code: str, detail: str, errors: dict | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.code, self.detail, self.errors, self.headers = code, detail, errors, headers or {}


def problem(code: str, detail: str, errors: dict | None = None, headers: dict | None = None) -> Response:
    status, title = PROBLEMS.get(code, (422, code.replace("_", " ").capitalize()))
    body = {"type": f"/problems/{code.lower().replace('_', '-')}", "title": title, "status": status,
            "detail": detail, "code": code}
    if errors is not None:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    response.headers.update(headers or {})
    return response


def validation_failed(errors: dict, detail: str = "the request body is not valid") -> ApiError:
    return ApiError("VALIDATION_FAILED", detail, errors=errors)


def register(app: Flask) -> None:
    """Turn every error, expected or not, into problem+json without internals."""

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return problem(e.code, e.detail, e.errors, e.headers)

    @app.errorhandler(ValidationError)
    def _validation(e: ValidationError):
        messages = e.messages if isinstance(e.messages, dict) else {"_schema": e.messages}
        return problem("VALIDATION_FAILED", "the request is not valid", messages)

    @app.errorhandler(WalletError)
    def _domain(e: WalletError):
        return problem(e.code, e.message)

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        code = {400: "MALFORMED_JSON", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
                415: "UNSUPPORTED_MEDIA_TYPE"}.get(e.code or 500, "INTERNAL_ERROR")
        # A 405 names the methods the resource allows (RFC 9110 section 15.5.6).
        allow = {"Allow": ", ".join(sorted(e.valid_methods))} if getattr(e, "valid_methods", None) else None
        return problem(code, e.description or code, headers=allow)

    @app.errorhandler(OperationalError)
    def _database_unavailable(e: OperationalError):
        # PostgreSQL away or restarting: nothing was accepted; the client retries (same Idempotency-Key).
        log.warning("database unavailable: %s", str(e).splitlines()[0])
        return problem("SERVICE_UNAVAILABLE", "the database is unavailable; retry shortly",
                       headers={"Retry-After": "1"})

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error")
        return problem("INTERNAL_ERROR", "an internal error occurred; it has been logged")
