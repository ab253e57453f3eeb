"""API keys, scopes, tenant isolation on every route, rate limits and backpressure."""
import uuid

import pytest
from sqlalchemy import text

from app.adapters.db import engine
from app.services import api_keys
from tests.conftest import api_client
from tests.helpers import create_wallet, funded_wallet, run, wait_job

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture()
def tenant_b(wallet_app):
    return api_client(wallet_app, "test-key-tenant-b")


@pytest.fixture()
def admin(wallet_app):
    return api_client(wallet_app, "test-key-admin")


def test_requests_without_or_with_a_bad_key_are_401(wallet_app):
    for token in (None, "nope", ""):
        client = api_client(wallet_app, token)
        r = client.get(f"/wallets/{uuid.uuid4()}")
        assert r.status_code == 401 and r.get_json()["code"] == "UNAUTHENTICATED"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = wallet_app.test_client().get("/jobs/x", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert r.status_code == 401


def test_health_ready_and_docs_need_no_key(wallet_app):
    client = api_client(wallet_app, None)
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_a_key_without_the_scope_is_403(wallet_app, client):
    wallet_id = create_wallet(client)
    read_only = api_client(wallet_app, "test-key-read-only")
    assert read_only.get(f"/wallets/{wallet_id}").status_code == 200
    r = read_only.post(f"/wallets/{wallet_id}/fund", json={"amount": "1.00"})
    assert r.status_code == 403 and r.get_json()["code"] == "INSUFFICIENT_SCOPE"
    write_only = api_client(wallet_app, "test-key-write-only")
    assert write_only.post(f"/wallets/{wallet_id}/fund", json={"amount": "1.00"}).status_code == 202
    assert write_only.get(f"/wallets/{wallet_id}").status_code == 403


def test_a_revoked_key_stops_working_at_once(wallet_app):
    key_id, token = api_keys.create_key("tenant-r", ["read", "write"], name="to revoke")
    client = api_client(wallet_app, token)
    assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404  # authenticated, nothing there
    assert api_keys.revoke_key(key_id) == 1
    assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 401


def test_keys_are_stored_hashed():
    key_id, token = api_keys.create_key("tenant-h", ["read"])
    listed = {k["id"]: k for k in api_keys.list_keys()}[key_id]
    assert token not in str(listed) and listed["prefix"] == token[:8]


@pytest.mark.parametrize("spec", ["tok", "tok:tenant", "tok:tenant:", "tok:tenant:fly", ":t:read"])
def test_bad_key_specs_are_refused(spec):
    with pytest.raises(api_keys.InvalidKeySpec):
        api_keys.parse_spec(spec)


def cross_tenant_routes(wallet_id, other_wallet_id, hold_id, transaction_id, job_id, batch_id, endpoint_id="",
                        delivery_id=""):
    """Every route that names a resource, with a body that would otherwise be accepted."""
    return [
        ("GET", f"/wallets/{wallet_id}", None, "WALLET_NOT_FOUND"),
        ("GET", f"/wallets/{wallet_id}/transactions", None, "WALLET_NOT_FOUND"),
        ("GET", f"/wallets/{wallet_id}/balance", None, "WALLET_NOT_FOUND"),
        ("GET", f"/wallets/{wallet_id}/statement", None, "WALLET_NOT_FOUND"),
        ("POST", f"/wallets/{wallet_id}/fund", {"amount": "1.00"}, "WALLET_NOT_FOUND"),
        ("POST", f"/wallets/{wallet_id}/withdraw", {"amount": "1.00"}, "WALLET_NOT_FOUND"),
        ("POST", f"/wallets/{wallet_id}/transfer", {"to_wallet_id": other_wallet_id, "amount": "1.00"},
         "WALLET_NOT_FOUND"),
        ("POST", f"/wallets/{other_wallet_id}/transfer", {"to_wallet_id": wallet_id, "amount": "1.00"},
         "WALLET_NOT_FOUND"),
        ("POST", f"/wallets/{wallet_id}/holds", {"amount": "1.00"}, "WALLET_NOT_FOUND"),
        ("POST", f"/wallets/{wallet_id}/freeze", {"reason": "x"}, "WALLET_NOT_FOUND"),
        ("POST", f"/wallets/{wallet_id}/unfreeze", {}, "WALLET_NOT_FOUND"),
        ("POST", f"/wallets/{wallet_id}/close", {}, "WALLET_NOT_FOUND"),
        ("PUT", f"/wallets/{wallet_id}/limits", {}, "WALLET_NOT_FOUND"),
        ("GET", f"/holds/{hold_id}", None, "HOLD_NOT_FOUND"),
        ("POST", f"/holds/{hold_id}/capture", {}, "HOLD_NOT_FOUND"),
        ("POST", f"/holds/{hold_id}/void", {}, "HOLD_NOT_FOUND"),
        ("GET", f"/transactions/{transaction_id}", None, "TRANSACTION_NOT_FOUND"),
        ("POST", f"/transactions/{transaction_id}/reverse", {}, "TRANSACTION_NOT_FOUND"),
        ("GET", f"/jobs/{job_id}", None, "JOB_NOT_FOUND"),
        ("POST", f"/jobs/{job_id}/cancel", None, "JOB_NOT_FOUND"),
        ("GET", f"/batches/{batch_id}", None, "BATCH_NOT_FOUND"),
        ("GET", f"/batches/{batch_id}/jobs", None, "BATCH_NOT_FOUND"),
        ("GET", f"/webhook-endpoints/{endpoint_id}", None, "WEBHOOK_ENDPOINT_NOT_FOUND"),
        ("DELETE", f"/webhook-endpoints/{endpoint_id}", None, "WEBHOOK_ENDPOINT_NOT_FOUND"),
        ("POST", f"/webhook-endpoints/{endpoint_id}/rotate-secret", None, "WEBHOOK_ENDPOINT_NOT_FOUND"),
        ("GET", f"/webhook-endpoints/{endpoint_id}/deliveries", None, "WEBHOOK_ENDPOINT_NOT_FOUND"),
        ("GET", f"/webhook-deliveries/{delivery_id}/attempts", None, "WEBHOOK_DELIVERY_NOT_FOUND"),
        ("POST", f"/webhook-deliveries/{delivery_id}/retry", None, "WEBHOOK_DELIVERY_NOT_FOUND"),
    ]


def test_another_tenants_resources_are_404_on_every_route(client, tenant_b, admin, wallet_app):
    wallet_id = funded_wallet(client, "50.00", user_id="isolated-user")
    hold = run(client, f"/wallets/{wallet_id}/holds", {"amount": "5.00"})
    transaction_id = client.get(f"/wallets/{wallet_id}/transactions").get_json()["items"][0]["id"]
    other = run(tenant_b, "/wallets", {"user_id": "b-user"})["result"]["id"]
    batch_id = client.post("/batches", json={"atomic": True, "commands": [  # fails whole: no balance changes
        {"type": "withdraw", "wallet_id": wallet_id, "amount": "1000.00"}]}).get_json()["id"]
    endpoint = client.post("/webhook-endpoints", json={"url": "http://127.0.0.1:9/hooks", "events": ["*"]}).get_json()
    delivery_id = str(uuid.uuid4())
    with engine().begin() as conn:  # a delivery of tenant A's endpoint (no dispatcher runs in this module)
        conn.execute(text("INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, webhook_id, event_type, payload,"
                          " status) VALUES (:id, :e, 'tenant-a', 'msg_x', 'wallet.funded', '{}', 'failed')"),
                     {"id": delivery_id, "e": endpoint["id"]})
    routes = cross_tenant_routes(wallet_id, other, hold["result"]["id"], transaction_id, hold["id"], batch_id,
                                 endpoint["id"], delivery_id)
    urls = wallet_app.url_map.bind("localhost")
    tested = {urls.match(path, method)[0] for method, path, _, _ in routes}
    named_routes = {rule.endpoint for rule in wallet_app.url_map.iter_rules()
                    if rule.arguments and not rule.endpoint.startswith("swagger_ui")}
    assert named_routes - tested == {"wallets.list_user_wallets"}  # covered below
    for method, path, body, code in routes:
        r = tenant_b.open(path, method=method, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.get_json())
        assert r.get_json()["code"] == code, (method, path)
    # The same requests with the owner's key or an admin key do see the resources.
    for method, path, _body, _ in routes:
        if method == "GET" and other not in path:
            assert client.open(path, method=method).status_code == 200, path
            assert admin.open(path, method=method).status_code == 200, path
    # Listing a user's wallets across tenants shows nothing, and nothing was changed.
    assert tenant_b.get("/users/isolated-user/wallets").get_json()["items"] == []
    assert [w["id"] for w in client.get("/users/isolated-user/wallets").get_json()["items"]] == [wallet_id]
    assert client.get(f"/wallets/{wallet_id}").get_json()["balance"] == "50.00"


def test_idempotency_keys_do_not_collide_across_tenants(client, tenant_b):
    a = create_wallet(client)
    b = run(tenant_b, "/wallets", {"user_id": "b"})["result"]["id"]
    key = {"Idempotency-Key": f"shared-{uuid.uuid4()}"}
    job_a = client.post(f"/wallets/{a}/fund", json={"amount": "1.00"}, headers=key).get_json()
    job_b = tenant_b.post(f"/wallets/{b}/fund", json={"amount": "1.00"}, headers=key).get_json()
    assert job_a["id"] != job_b["id"]
    assert wait_job(client, job_a["id"])["status"] == "succeeded"
    assert wait_job(tenant_b, job_b["id"])["status"] == "succeeded"


def test_cursors_cannot_read_across_tenants(client, tenant_b):
    user = f"cursor-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        create_wallet(client, user_id=user)
    cursor = client.get(f"/users/{user}/wallets?limit=1").get_json()["next_cursor"]
    assert tenant_b.get(f"/users/{user}/wallets?limit=1&cursor={cursor}").get_json()["items"] == []


def test_rate_limit_answers_429_with_retry_after(stack, monkeypatch):
    from app.api import create_app
    from app.config import settings

    _, token = api_keys.create_key("tenant-rate", ["read"], name="rate limit")  # its own counter
    monkeypatch.setenv("RATE_LIMIT", "5")
    settings.cache_clear()
    try:
        client = api_client(create_app({"TESTING": True}), token)
        responses = [client.get(f"/jobs/{uuid.uuid4()}") for _ in range(12)]
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert responses[0].status_code == 404
    limited = [r for r in responses if r.status_code == 429]
    assert limited, [r.status_code for r in responses]
    assert limited[0].get_json()["code"] == "RATE_LIMIT" and limited[0].headers["Retry-After"] == "1"
    assert limited[0].headers["Content-Type"] == "application/problem+json"


def test_a_deep_command_queue_answers_503_with_retry_after(stack, monkeypatch, client):
    from app.config import settings
    from app.services import submission

    wallet_id = create_wallet(client)
    monkeypatch.setenv("COMMAND_QUEUE_MAX_DEPTH", "1")
    settings.cache_clear()
    monkeypatch.setattr(submission, "backlog", lambda limit: limit + 1)
    try:
        r = client.post(f"/wallets/{wallet_id}/fund", json={"amount": "1.00"})
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert r.status_code == 503 and r.get_json()["code"] == "SERVICE_UNAVAILABLE"
    assert int(r.headers["Retry-After"]) >= 1
    assert client.get(f"/wallets/{wallet_id}").get_json()["balance"] == "0.00"
