"""Both APIs publish a valid OpenAPI 3 document describing every route, and Swagger UI."""
from openapi_spec_validator import validate

from app.api.openapi import undocumented
from app.api.operations import OPERATIONS
from tests.conftest import api_client


def test_the_wallet_api_spec_is_valid_and_complete(wallet_app):
    client = api_client(wallet_app, None)  # the docs need no key
    spec = client.get("/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert undocumented(wallet_app, OPERATIONS) == set()
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert ("/wallets/{wallet_id}/transfer", "post") in documented
    assert ("/holds/{hold_id}/capture", "post") in documented
    assert len(documented) == sum(len(r.methods - {"HEAD", "OPTIONS"}) for r in wallet_app.url_map.iter_rules()
                                  if r.endpoint in OPERATIONS)
    fund = spec["paths"]["/wallets/{wallet_id}/fund"]["post"]
    assert set(fund["responses"]) >= {"200", "202", "401", "404", "422", "503"}
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_swagger_ui_is_served_at_docs_without_a_key(wallet_app):
    client = api_client(wallet_app, None)
    page = client.get("/docs/")
    assert page.status_code == 200 and b"swagger-ui" in page.data
    assert client.get("/docs/swagger-ui-bundle.js").status_code == 200
