"""The History API: API keys, tenant isolation, OpenAPI document and fuzzing."""
from openapi_spec_validator import validate

from app.api.openapi import undocumented
from history.operations import OPERATIONS
from tests.conftest import TENANT_A_KEY, api_client
from tests.helpers import create_wallet, run
from tests.history.conftest import wait_caught_up
from tests.integration.test_schemathesis import run_schemathesis


def history_app():
    from history.api import create_app

    return create_app({"TESTING": True})


def test_history_needs_a_key_and_hides_other_tenants(pipeline, client, wallet_app):
    user = "history-isolated"
    wallet_id = create_wallet(client, user_id=user)
    assert run(client, f"/wallets/{wallet_id}/fund", {"amount": "5.00"})["status"] == "succeeded"
    wait_caught_up()
    app = history_app()
    assert api_client(app, None).get(f"/wallets/{wallet_id}/history").status_code == 401
    owner = api_client(app, TENANT_A_KEY).get(f"/wallets/{wallet_id}/history").get_json()["items"]
    assert [e["event_type"] for e in owner] == ["WALLET_FUNDED", "WALLET_CREATED"]
    other = api_client(app, "test-key-tenant-b")
    assert other.get(f"/wallets/{wallet_id}/history").get_json() == {"items": [], "next_cursor": None}
    assert other.get(f"/users/{user}/activity").get_json() == {"items": [], "next_cursor": None}
    admin = api_client(app, "test-key-admin")
    assert len(admin.get(f"/wallets/{wallet_id}/history").get_json()["items"]) == 2


def test_history_openapi_is_valid_and_complete(stack):
    app = history_app()
    spec = api_client(app, None).get("/openapi.json").get_json()
    validate(spec)
    assert undocumented(app, OPERATIONS) == set()
    assert api_client(app, None).get("/docs/").status_code == 200


def test_schemathesis_finds_nothing_on_the_history_api(pipeline):
    run_schemathesis(pipeline.api_url, examples=200, min_cases=500)
