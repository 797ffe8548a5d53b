"""docs/configuration.md documents every setting: its environment variable and its default, as the code has
them. A setting added to `Settings` without a row in the docs (or a default changed in one place only) fails."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo

from jushostit.config import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
ROW = re.compile(r"^\|\s*`(?P<var>[A-Z][A-Z0-9_]*)`\s*\|\s*(?P<default>[^|]*?)\s*\|\s*(?P<what>[^|].*?)\s*\|\s*$")
UNSET = "(unset)"


def env_var(name: str) -> str:
    return "DATABASE_URL" if name == "database_url" else f"JUSHOSTIT_{name.upper()}"


def rendered_default(field: FieldInfo) -> str:
    """How the docs write a default: as one would type it into the environment."""
    default = field.get_default(call_default_factory=True)
    if default is None:
        return UNSET
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, Path):
        text = default.as_posix()
        return text if default.is_absolute() or text.startswith(".") else f"./{text}"
    if isinstance(default, dict | list):
        return json.dumps(default)
    return str(default)


def documented() -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            assert match["var"] not in rows, f"{match['var']} is documented twice"
            rows[match["var"]] = {"default": match["default"], "what": match["what"]}
    return rows


def cell_value(cell: str) -> str:
    return cell[1:-1] if cell.startswith("`") and cell.endswith("`") else cell


FIELDS = sorted(Settings.model_fields.items())


def test_the_docs_table_is_found() -> None:
    rows = documented()
    assert len(rows) >= len(FIELDS)
    assert all(row["what"] for row in rows.values()), "every setting says what it does"


@pytest.mark.parametrize(("name", "field"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_setting_is_documented_with_its_default(name: str, field: FieldInfo) -> None:
    rows = documented()
    var = env_var(name)
    assert var in rows, f"{var} ({name}) is missing from docs/configuration.md"
    assert cell_value(rows[var]["default"]) == rendered_default(field), f"{var}: documented default differs"
    assert len(rows[var]["what"]) >= 15, f"{var}: say what it does"


def test_nothing_documented_that_does_not_exist() -> None:
    names = {env_var(name) for name in Settings.model_fields}
    stale = set(documented()) - names
    assert not stale, f"documented but not a setting: {sorted(stale)}"


@pytest.mark.parametrize(("name", "field"), FIELDS, ids=[name for name, _ in FIELDS])
def test_the_documented_variable_sets_the_field(name: str, field: FieldInfo, monkeypatch) -> None:
    """The documented default, given through the documented variable, is read back as the code's default."""
    default = cell_value(documented()[env_var(name)]["default"])
    if default == UNSET:
        sample: dict[str, Any] = {
            "database_url": "postgresql://u@db.example:5432/x", "public_url": "https://cp.example",
            "default_billing_mode": "card",
        }
        default = sample.get(name, "configured-value")
        expected: Any = default
    else:
        expected = field.get_default(call_default_factory=True)
    monkeypatch.setenv(env_var(name), default)
    value = getattr(Settings(), name)
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    assert value == expected


def test_database_url_also_reads_the_prefixed_alias(monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("JUSHOSTIT_DATABASE_URL", "postgresql://u@alias.example/db")
    assert Settings().database_url == "postgresql://u@alias.example/db"
    assert "`JUSHOSTIT_DATABASE_URL`" in DOC.read_text()


def test_the_documented_oidc_example_is_a_valid_configuration(monkeypatch) -> None:
    text = DOC.read_text()
    section = text[text.index("## Sign-in with OpenID Connect") :]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block, "the OIDC section shows a JSON example"
    monkeypatch.setenv("JUSHOSTIT_OIDC_PROVIDERS", block.group(1))
    providers = Settings().oidc_providers
    assert set(providers) == {"google", "auth0", "keycloak"}
    assert providers["auth0"].scope == "openid email"
    assert providers["google"].scope == "openid email profile"
    assert providers["keycloak"].client_secret.get_secret_value() == "keycloak-client-secret"
    for field in ("discovery_url", "client_id", "client_secret", "scope"):
        assert f"`{field}`" in section
