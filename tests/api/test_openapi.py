"""GET /openapi.json: a valid OpenAPI 3.1 document of every route, every struct field and
every error response, for the server's own settings; /swagger works with no network."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jsonschema
import msgspec
import pytest
from openapi_spec_validator import validate

from tasks_server.api import schemas
from tasks_server.app import create_app
from tasks_server.model import spec
from tests.conftest import Api

METHODS = {"get", "post", "put", "patch", "delete"}


def document(api: Api) -> dict[str, Any]:
    reply = api.http.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    found: dict[str, Any] = reply.json()
    return found


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "registration_token": "registration-token-0123456789",
            "max_throttle_request": 10,
            "max_throttle_time_window": 60_000,
        },
    ],
    ids=["defaults", "token-and-throttle"],
)
def test_document_is_valid_openapi_3_1(
    start_server: Callable[..., Api], overrides: dict[str, Any]
) -> None:
    doc = document(start_server(**overrides))
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on anything the OpenAPI 3.1 schema refuses
    ids = [operation["operationId"] for _, _, operation in operations(doc)]
    assert len(ids) == len(set(ids))


def test_every_route_is_documented(api: Api) -> None:
    doc = document(api)
    routes = {
        (method, route.path)
        for route in create_app(api.settings).routes
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    }
    routes -= {("GET", "/swagger/{asset}")}  # Swagger UI's own files
    # the dashboard: a page for people, its assets
    routes -= {("GET", "/dashboard"), ("GET", "/dashboard/"), ("GET", "/dashboard/assets/{name}")}
    assert {(method, path) for method, path, _ in operations(doc)} == routes


def struct_types() -> list[type[msgspec.Struct]]:
    """Every struct defined in model/spec.py and api/schemas.py (but the two bases)."""
    return [
        value
        for module in (spec, schemas)
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == module.__name__
        and value not in (spec.Strict, schemas.Camel)
    ]


def test_every_field_of_every_struct_is_in_the_document(api: Api) -> None:
    doc = document(api)
    components = doc["components"]["schemas"]
    for struct in struct_types():
        fields = {field.encode_name for field in msgspec.structs.fields(struct)}
        query_of = {
            schemas.ListQuery: "/v1/queues",
            schemas.AttemptsQuery: "/v1/queues/{task_id}/attempts",
        }
        if struct in query_of:  # the query parameters of a GET
            parameters = doc["paths"][query_of[struct]]["get"]["parameters"]
            assert fields <= {parameter.get("name") for parameter in parameters}
            continue
        assert set(components[struct.__name__]["properties"]) == fields, struct.__name__
    # what PATCH takes: every field of the registration, at every level
    for name in ("HttpRequest", "Config", "Auth", "AwsSigv4", "Cert", "Proxy"):
        patch = components[f"{name}Patch"]
        assert set(patch["properties"]) == set(components[name]["properties"])
        assert "required" not in patch


def enums(node: Any) -> list[dict[str, Any]]:
    """Every schema of `node` with an `enum`, at any depth."""
    if isinstance(node, list):
        return [found for item in node for found in enums(item)]
    if not isinstance(node, dict):
        return []
    own = [node] if isinstance(node.get("enum"), list) else []
    return own + [found for value in node.values() for found in enums(value)]


def test_enums_say_their_type_and_values(api: Api) -> None:
    doc = document(api)
    parameters = {p.get("name"): p for p in doc["paths"]["/v1/queues"]["get"]["parameters"]}
    assert parameters["order"]["schema"] == {
        "type": "string",
        "enum": ["createdAt", "estimateEndAt", "estimateExecutionAt"],
    }
    assert parameters["sort"]["schema"] == {"type": "string", "enum": ["asc", "desc"]}
    assert parameters["state"]["schema"]["type"] == "string"
    assert set(parameters["state"]["schema"]["enum"]) == set(schemas.StateName.__args__)
    config = doc["components"]["schemas"]["Config"]["properties"]
    assert config["ipVersion"]["type"] == "integer"
    found = enums(doc)
    assert len(found) > 10
    for schema in found:
        kind = {"string": str, "integer": int}[schema["type"]]
        assert all(isinstance(value, kind) for value in schema["enum"]), schema


def test_every_error_response_is_the_one_error_shape(api: Api) -> None:
    for method, path, operation in operations(document(api)):
        responses = operation["responses"]
        errors = {int(code) for code in responses if int(code) >= 400}
        for code in errors:
            schema = responses[str(code)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
        if path.startswith("/v1/"):
            assert 503 in errors, (method, path)
            assert 429 not in errors, "no throttle configured"
        if operation["security"]:
            assert {401, 403} <= errors, (method, path)
        if "{" in path:
            assert {400, 404} <= errors, (method, path)
        if "requestBody" in operation:
            assert {400, 413} <= errors, (method, path)


def test_security_follows_the_settings(start_server: Callable[..., Api]) -> None:
    open_doc = document(start_server())
    register = open_doc["paths"]["/v1/owners/register"]["post"]
    assert register["security"] == []
    assert not {"401", "403"} & set(register["responses"])
    listing = open_doc["paths"]["/v1/queues"]["get"]
    assert listing["security"] == [{"ownerKey": [], "ownerId": []}]
    schemes = open_doc["components"]["securitySchemes"]
    assert schemes["ownerKey"] == {**schemes["ownerKey"], "type": "http", "scheme": "bearer"}
    assert schemes["ownerId"]["in"] == "header"
    assert schemes["ownerId"]["name"] == "X-Tasks-Owner-Id"

    closed = document(
        start_server(
            registration_token="registration-token-0123456789",
            max_throttle_request=5,
            max_throttle_time_window=1000,
        )
    )
    register = closed["paths"]["/v1/owners/register"]["post"]
    assert register["security"] == [{"registrationToken": []}]
    assert {"401", "403", "429"} <= set(register["responses"])
    assert "RateLimit-Remaining" in register["responses"]["201"]["headers"]
    assert "Retry-After" in register["responses"]["429"]["headers"]
    assert "429" not in closed["paths"]["/openapi.json"]["get"]["responses"]


def test_examples_match_their_schemas_and_are_accepted(api: Api) -> None:
    doc = document(api)
    registry = {"components": doc["components"]}
    owner = api.owner()
    for method, path, operation in operations(doc):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is None:
            continue
        assert "example" in body, (method, path)
        schema = {**body["schema"], **registry}
        jsonschema.validate(body["example"], schema, cls=jsonschema.Draft202012Validator)
    example = doc["paths"]["/v1/queues/register"]["post"]["requestBody"]["content"]
    assert api.register(owner, example["application/json"]["example"]).status_code == 201


# ---- Swagger UI, offline ----


def test_swagger_page_uses_only_assets_the_server_serves(api: Api) -> None:
    page = api.http.get("/swagger")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert links, page.text
    assert not re.search(r"https?://|//", page.text), "nothing may come from the network"
    kinds = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}
    for link in links:
        reply = api.http.get(f"/{link}")  # relative to /swagger
        assert reply.status_code == 200, link
        suffix = link[link.rindex(".") :]
        assert reply.headers["content-type"].startswith(kinds[suffix]), link
    bundle = api.http.get("/swagger/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle and len(bundle) > 500_000  # the real Swagger UI
    assert 'url: "openapi.json"' in api.http.get("/swagger/start.js").text


@pytest.mark.parametrize(
    "asset", ["index.html", "swagger-initializer.js", "..%2Fopenapi.py", "nope.js"]
)
def test_only_the_needed_swagger_assets_are_served(api: Api, asset: str) -> None:
    reply = api.http.get(f"/swagger/{asset}")
    assert reply.status_code == 404
    assert reply.json()["message"] == "Not found"
