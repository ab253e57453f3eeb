"""Webhook endpoint routes: register, list, read, delete, rotate the secret; deliveries and their retry.

Synchronous (not commands): scope `write` to change, `read` to list. Another
tenant's endpoint or delivery is 404, as if it did not exist.
"""
from __future__ import annotations

import uuid

from flask import Blueprint, jsonify

from app.api.context import current_tenant, json_body, owner_tenant
from app.api.problems import ApiError, validation_failed
from app.api.resources import query_args
from app.api.schemas import DeliveriesQuerySchema, WebhookEndpointSchema, load
from app.domain.webhooks import UrlNotAllowed
from app.services import webhooks

bp = Blueprint("webhooks", __name__)


def _id(value: str, code: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(code, f"{value} does not exist") from None


def _endpoint_id(value: str) -> str:
    return _id(value, "WEBHOOK_ENDPOINT_NOT_FOUND")


def _endpoint(call, *args):
    try:
        return call(*args)
    except webhooks.EndpointNotFound:
        raise ApiError("WEBHOOK_ENDPOINT_NOT_FOUND", f"webhook endpoint {args[0]} does not exist") from None


@bp.post("/webhook-endpoints")
def register():
    body = load(WebhookEndpointSchema, json_body())
    unknown = sorted(set(body["events"]) - webhooks.NOTIFICATION_TYPES - {"*"})
    if unknown:
        raise validation_failed({"events": [f"unknown notification type {', '.join(unknown)}; one of "
                                            f"{', '.join(sorted(webhooks.NOTIFICATION_TYPES))} or *"]})
    try:
        endpoint = webhooks.register(owner_tenant(), body["url"], body["events"], body["description"])
    except UrlNotAllowed as e:
        raise ApiError("WEBHOOK_URL_NOT_ALLOWED", f"the URL {e}", errors={"url": [str(e)]}) from None
    response = jsonify(endpoint)
    response.status_code = 201
    response.headers["Location"] = f"/webhook-endpoints/{endpoint['id']}"
    return response


@bp.get("/webhook-endpoints")
def list_endpoints():
    return jsonify(webhooks.list_endpoints(current_tenant()))


@bp.get("/webhook-endpoints/<endpoint_id>")
def get_endpoint(endpoint_id: str):
    return jsonify(_endpoint(webhooks.get_endpoint, _endpoint_id(endpoint_id), current_tenant()))


@bp.delete("/webhook-endpoints/<endpoint_id>")
def delete_endpoint(endpoint_id: str):
    _endpoint(webhooks.delete_endpoint, _endpoint_id(endpoint_id), current_tenant())
    return "", 204


@bp.post("/webhook-endpoints/<endpoint_id>/rotate-secret")
def rotate_secret(endpoint_id: str):
    return jsonify(_endpoint(webhooks.rotate_secret, _endpoint_id(endpoint_id), current_tenant()))


@bp.get("/webhook-endpoints/<endpoint_id>/deliveries")
def list_deliveries(endpoint_id: str):
    args = query_args(DeliveriesQuerySchema)
    return jsonify(_endpoint(webhooks.list_deliveries, _endpoint_id(endpoint_id), current_tenant(),
                             args.get("status"), args["limit"], args.get("cursor")))


@bp.get("/webhook-deliveries/<delivery_id>/attempts")
def list_attempts(delivery_id: str):
    delivery_id = _id(delivery_id, "WEBHOOK_DELIVERY_NOT_FOUND")
    try:
        return jsonify(webhooks.list_attempts(delivery_id, current_tenant()))
    except webhooks.DeliveryNotFound:
        raise ApiError("WEBHOOK_DELIVERY_NOT_FOUND", f"webhook delivery {delivery_id} does not exist") from None


@bp.post("/webhook-deliveries/<delivery_id>/retry")
def retry_delivery(delivery_id: str):
    delivery_id = _id(delivery_id, "WEBHOOK_DELIVERY_NOT_FOUND")
    try:
        delivery = webhooks.retry_delivery(delivery_id, current_tenant())
    except webhooks.DeliveryNotFound:
        raise ApiError("WEBHOOK_DELIVERY_NOT_FOUND", f"webhook delivery {delivery_id} does not exist") from None
    response = jsonify(delivery)
    response.status_code = 202
    return response
