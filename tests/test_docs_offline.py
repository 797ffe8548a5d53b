"""API docs that work on a machine without internet (issue 8 §8).

/docs is Swagger UI served by the app itself from the pinned swagger-ui-py package: the page and every asset it
references come from the app, and no external URL appears in it. ReDoc (which loads from CDNs) is not offered.
The OpenAPI declares the two ways to authenticate (an access token, an API key; both `Authorization: Bearer`),
each operation's security with the API key scope it needs, read from the route's own auth dependency (public
operations: `security: []`), and every scope with its meaning.
"""

from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from packaging.requirements import Requirement

from jushostit.app import api_routes
from jushostit.auth.dependencies import AuthRule, route_rule
from jushostit.auth.scopes import Scope
from tests.test_api_contract import assert_error

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"get", "put", "post", "patch", "delete"}


class References(HTMLParser):
    """Every URL the page's tags load (src, href)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


async def test_docs_page_and_every_asset_it_references_are_served_by_the_app(client) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page.text, re.IGNORECASE), "an external URL"
    parser = References()
    parser.feed(page.text)
    # The script's own fetch: the OpenAPI document Swagger UI loads.
    urls = [*parser.urls, *re.findall(r"url: '([^']+)'", page.text)]
    assert {"/openapi.json", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(urls)
    expected_types = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
    for url in urls:
        assert not urlsplit(url).scheme and not urlsplit(url).netloc, url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert expected_types[Path(urlsplit(url).path).suffix] in asset.headers["content-type"], url
        assert len(asset.content) > 100, url
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text and bundle.headers.get("cache-control")


async def test_the_docs_page_sends_nothing_to_a_validator(client) -> None:
    """Swagger UI's default validator badge would send the OpenAPI's address to validator.swagger.io."""
    page = await client.get("/docs")
    assert '"validatorUrl": null' in page.text


async def test_the_bundled_swagger_ui_reads_openapi_3_1(client) -> None:
    """Swagger UI 4 cannot render the OpenAPI 3.1 FastAPI writes: the bundle must be 5 or later."""
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")
    bundle = (await client.get("/docs/assets/swagger-ui-bundle.js")).text
    assert "OpenAPI31" in bundle


@pytest.mark.parametrize(
    "path", ["/docs/assets/nope.js", "/docs/assets/..%2F__init__.py", "/docs/assets/swagger-editor.js", "/redoc"]
)
async def test_only_the_docs_assets_are_served_and_redoc_is_not_offered(client, path) -> None:
    assert_error(await client.get(path), 404, "not_found")


def test_swagger_ui_comes_from_a_pinned_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(line) for line in project["dependencies"] if Requirement(line).name == "swagger-ui-py"]
    assert len(found) == 1, "swagger-ui-py is a dependency of the package"
    specifier = found[0].specifier
    assert any(s.operator in (">=", "==", "~=") for s in specifier) and any(s.operator in ("<", "==", "~=") for s in specifier)
    assert specifier.contains(version("swagger-ui-py")), "the installed version is the pinned one"


# --- the OpenAPI's security ------------------------------------------------------------------------------------


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_the_openapi_declares_an_access_token_and_an_api_key(app) -> None:
    schemes = app.openapi()["components"]["securitySchemes"]
    assert schemes["accessToken"] == {**schemes["accessToken"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["apiKey"]["type"] == "http" and schemes["apiKey"]["scheme"] == "bearer"
    assert "Authorization: Bearer jhi_" in schemes["apiKey"]["description"]


def test_every_operation_declares_its_security_and_public_ones_none(app) -> None:
    document = app.openapi()
    rules = {(method, route.path_format): route_rule(route.dependant) for route in api_routes() for method in route.methods}
    schemes = set(document["components"]["securitySchemes"])
    for method, path, operation in operations(document):
        label = f"{method.upper()} {path}"
        assert "security" in operation, label
        rule = rules[(method.upper(), path)]
        if rule is AuthRule.public:
            assert operation["security"] == [], label
            continue
        assert {"accessToken": []} in operation["security"], label
        assert all(set(requirement) <= schemes for requirement in operation["security"]), label
        assert "**Authorization:**" in operation["description"], label
        for requirement in operation["security"]:
            assert set(requirement.get("apiKey", [])) <= {s.value for s in Scope}, label


@pytest.mark.parametrize(
    ("method", "path", "security"),
    [
        ("get", "/v1/plans", []),
        ("get", "/healthz", []),
        ("get", "/v1/me", [{"accessToken": []}, {"apiKey": []}]),
        ("post", "/v1/me/api-keys", [{"accessToken": []}]),  # session only: a key cannot mint keys
        ("get", "/v1/accounts/{account_id}", [{"accessToken": []}, {"apiKey": ["account:read"]}]),
        ("get", "/v1/accounts/{account_id}/subscriptions", [{"accessToken": []}, {"apiKey": ["billing:read"]}]),
        ("post", "/v1/accounts/{account_id}/instances", [{"accessToken": []}, {"apiKey": ["instances:write"]}]),
        ("get", "/v1/instances/{instance_id}/credentials", [{"accessToken": []}, {"apiKey": ["instances:secrets"]}]),
        ("get", "/v1/admin/accounts", [{"accessToken": []}, {"apiKey": ["admin"]}]),
    ],
)
def test_an_operation_asks_for_the_scope_its_route_requires(app, method, path, security) -> None:
    assert app.openapi()["paths"][path][method]["security"] == security


def test_the_role_a_route_needs_is_documented(app) -> None:
    subscriptions = app.openapi()["paths"]["/v1/accounts/{account_id}/subscriptions"]["get"]
    assert "`admin` role or above" in subscriptions["description"]
    account = app.openapi()["paths"]["/v1/accounts/{account_id}"]["get"]
    assert "role or above" not in account["description"] and "A member of the account" in account["description"]


def test_every_scope_is_documented_with_its_meaning_and_operations(app) -> None:
    document = app.openapi()
    api_key = document["components"]["securitySchemes"]["apiKey"]
    assert set(api_key["x-scopes"]) == {scope.value for scope in Scope}
    lines = {line.split("`")[1]: line for line in api_key["description"].splitlines() if line.startswith("- `")}
    assert set(lines) == {scope.value for scope in Scope}
    for scope in Scope:
        assert api_key["x-scopes"][scope.value], f"{scope.value} has no meaning written"
        assert api_key["x-scopes"][scope.value] in lines[scope.value]
    for method, path, operation in operations(document):
        for requirement in operation["security"]:
            for scope in requirement.get("apiKey", []):
                assert f"`{method.upper()} {path}`" in lines[scope], f"{scope} does not list {method.upper()} {path}"


async def test_the_served_openapi_carries_the_security(client, app) -> None:
    served = (await client.get("/openapi.json")).json()
    assert served["components"]["securitySchemes"] == app.openapi()["components"]["securitySchemes"]
