"""OpenAPI 3 documents generated from the marshmallow schemas, and Swagger UI at /docs.

Each API lists its operations by endpoint; `undocumented()` names any route
missing from that list, so a test fails when a route is added without docs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, jsonify
from flask_swagger_ui import get_swaggerui_blueprint
from marshmallow import Schema

from app.api.docs_schemas import JobOut, Problem

OPENAPI_VERSION = "3.0.3"
_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
_SKIPPED_ENDPOINTS = {"static", "openapi_json"}

PATH_PARAMETERS = {
    "wallet_id": {"type": "string", "format": "uuid"},
    "hold_id": {"type": "string", "format": "uuid"},
    "transaction_id": {"type": "string", "format": "uuid"},
    "job_id": {"type": "string", "format": "uuid"},
    "batch_id": {"type": "string", "format": "uuid"},
    "user_id": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[\\x20-\\x7e]+$"},
}

COMMAND_HEADERS = [
    {"name": "Idempotency-Key", "in": "header", "required": False,
     "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
     "description": "Same key and body return the same job; the command runs at most once."},
    # RFC 7240: a server ignores the preferences it does not know, so any value is accepted.
    {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "`wait=N`: wait up to N seconds (N above 30 counts as 30) for the job to be final and answer "
                    "200 with it (`Preference-Applied` says so). Other preferences are ignored."},
]
IF_MATCH_HEADER = {
    "name": "If-Match", "in": "header", "required": False,
    # Any value is accepted: one that names no entity tag is a condition that cannot hold (412), not a bad request.
    "schema": {"type": "string"},
    "description": 'The wallet\'s ETag from `GET /wallets/{wallet_id}` (`"7"`: its version): the command is only '
                   "accepted if the wallet is at that version (else 412 PRECONDITION_FAILED, nothing recorded), and "
                   "its job fails VERSION_MISMATCH if the wallet changed before it ran. `*`: no condition."}
# Any value is accepted: 1–200 visible ASCII characters are kept, anything else is replaced (as a proxy would).
REQUEST_ID_HEADER = {"name": "X-Request-ID", "in": "header", "required": False, "schema": {"type": "string"},
                     "description": "Carried through the job, ledger, events and history and echoed in the response. "
                                    "A value that is not 1–200 visible ASCII characters (0x21–0x7E), or none, is "
                                    "replaced by a generated id."}

ERROR_DESCRIPTIONS = {
    400: "Malformed JSON", 401: "Missing or unknown API key", 403: "The key lacks the scope",
    404: "Not found (or another tenant's)", 405: "Method not allowed", 409: "Conflict with the resource's state",
    412: "Precondition failed: the wallet is not at a version If-Match names; nothing was recorded",
    413: "Body too large",
    422: "Validation failed", 429: "Rate limit (see Retry-After)",
    503: "Unavailable: the command queue is full or the database is restarting (see Retry-After)",
}


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[Schema] | None = None  # the 200 body of a read
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    text: str | None = None  # media type of a 200 body that is not JSON
    command: bool = False  # answers 202 with the job
    accepted: type[Schema] | None = None  # answers 202 with this resource (a command that is not one job)
    public: bool = False  # needs no API key
    tags: tuple[str, ...] = field(default_factory=tuple)
    other_json_responses: tuple[tuple[int, str], ...] = ()  # (status, description), same body as the 200
    description: str | None = None
    problems: tuple[int, ...] = ()  # further problem+json statuses the operation answers with
    success: int = 200  # the status of a read's or a synchronous change's answer (201 created, 204 no body)
    if_match: bool = False  # a command on a wallet: takes If-Match (412 when it does not hold)
    etag: bool = False  # a read that sends ETag (the wallet's version)


def _problem(description: str) -> dict:
    return {"description": description, "content": {"application/problem+json": {"schema": "Problem"}}}


def _query_parameters(schema: type[Schema]) -> list[dict]:
    """The schema's fields as query parameters; a field standing for many parameters (`metadata[KEY]=VALUE`)
    documents itself with its `openapi_parameter`."""
    own = {name: f.openapi_parameter for name, f in schema._declared_fields.items()
           if hasattr(f, "openapi_parameter")}
    return [{"in": "query", "schema": schema(exclude=tuple(own)) if own else schema}, *own.values()]


def _operation(rule, method: str, op: Operation) -> dict:
    params = [{"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS.get(name, {"type": "string"})}
              for name in _PARAM.findall(rule.rule)]
    if op.query is not None:
        params.extend(_query_parameters(op.query))
    params.append(REQUEST_ID_HEADER)
    doc: dict = {"summary": op.summary, "operationId": rule.endpoint.replace(".", "_"), "parameters": params,
                 "responses": {}, "tags": list(op.tags) or [rule.endpoint.split(".")[0]]}
    if op.description:
        doc["description"] = op.description
    if op.command or op.accepted is not None:
        params.extend(COMMAND_HEADERS)
        if op.if_match:
            params.append(IF_MATCH_HEADER)
        what = "job" if op.command else "resource"
        job = {"content": {"application/json": {"schema": "JobOut" if op.command else op.accepted}}}
        doc["responses"]["202"] = {"description": f"Accepted: poll the {what} at Location", **job}
        doc["responses"]["200"] = {"description": f"The {what}, final (Prefer: wait) or replayed (Idempotency-Key)",
                                   **job}
    elif op.response is not None:
        doc["responses"][str(op.success)] = {"description": "OK",
                                             "content": {"application/json": {"schema": op.response}}}
        if op.etag:
            doc["responses"][str(op.success)]["headers"] = {"ETag": {
                "description": 'The wallet\'s version as a strong entity tag (`"7"`), for If-Match on its commands',
                "schema": {"type": "string", "pattern": '^"[0-9]+"$'}}}
        for status, description in op.other_json_responses:
            doc["responses"][str(status)] = {"description": description,
                                             "content": {"application/json": {"schema": op.response}}}
    elif op.text is not None:
        doc["responses"]["200"] = {"description": "OK", "content": {op.text: {"schema": {"type": "string"}}}}
    elif op.success == 204:
        doc["responses"]["204"] = {"description": "Done; no body"}
    if op.body is not None:
        doc["requestBody"] = {"required": method != "put" and bool(op.body._declared_fields) and any(
            f.required for f in op.body._declared_fields.values()),
            "content": {"application/json": {"schema": op.body}}}
    codes = [] if op.public else [401, 403, 429, 503]
    if "<" in rule.rule:
        codes.append(404)
    if op.body is not None or op.query is not None or op.command or op.accepted is not None:
        codes.append(422)
    if op.body is not None:
        codes += [400, 413]
    codes += op.problems
    if op.if_match:
        codes.append(412)
    for code in sorted(set(codes)):
        doc["responses"][str(code)] = _problem(ERROR_DESCRIPTIONS[code])
    if op.public:
        doc["security"] = []
    return doc


def build_spec(app: Flask, title: str, description: str, operations: dict[str, Operation]) -> dict:
    spec = APISpec(title=title, version="1.0.0", openapi_version=OPENAPI_VERSION,
                   plugins=[MarshmallowPlugin()], info={"description": description},
                   security=[{"bearerAuth": []}])
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                   "description": "An API key: Authorization: Bearer <key>"})
    spec.components.schema("Problem", schema=Problem)
    spec.components.schema("JobOut", schema=JobOut)
    paths: dict[str, dict] = {}
    for rule in app.url_map.iter_rules():
        op = operations.get(rule.endpoint)
        if op is None:
            continue
        path = _PARAM.sub(r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule, method.lower(), op)
    for path, ops in sorted(paths.items()):
        spec.path(path=path, operations=ops)
    return spec.to_dict()


def undocumented(app: Flask, operations: dict[str, Operation]) -> set[str]:
    """Endpoints the app serves that the OpenAPI document does not describe."""
    served = {r.endpoint for r in app.url_map.iter_rules()
              if r.endpoint not in _SKIPPED_ENDPOINTS and not r.endpoint.startswith("swagger_ui")}
    return served - set(operations)


def register(app: Flask, title: str, description: str, operations: dict[str, Operation]) -> None:
    """Serve /openapi.json (built once, lazily) and Swagger UI at /docs."""
    cache: dict = {}

    @app.get("/openapi.json", endpoint="openapi_json")
    def openapi_json():
        if "spec" not in cache:
            cache["spec"] = build_spec(app, title, description, operations)
        return jsonify(cache["spec"])

    app.register_blueprint(get_swaggerui_blueprint("/docs", "/openapi.json", config={"app_name": title}),
                           name="swagger_ui")
