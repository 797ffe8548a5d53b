"""A template's environment reaches the instance's process rendered with that instance's own address: {url},
{host} and {slug} filled in from the facts the reconciler read (DESIGN §2: desired state as data)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import delete

from jushostit.catalog.loader import load_templates
from jushostit.models import ServiceTemplate
from tests.live import Live, processes_in

ENV = [
    {"name": "SITE_URL", "value": "{url}"},
    {"name": "SITE_HOST", "value": "{host}"},
    {"name": "DB_HOST", "value": "{slug}-db"},
]


@contextlib.asynccontextmanager
async def operator_template(live: Live, prefix: str, env: list[dict[str, Any]]) -> AsyncIterator[str]:
    """An operator's template: static-site with the environment `env`."""
    [shipped] = [t for t in load_templates() if t.code == "static-site"]
    code = f"{prefix}-{uuid.uuid4().hex[:8]}"
    spec = {**shipped.model_dump(mode="json", exclude_none=True), "code": code, "env": env}
    async with live.container.database.unit_of_work() as session:
        session.add(ServiceTemplate(code=code, kind="app", spec=spec, source="admin"))
    try:
        yield code
    finally:
        async with live.container.database.unit_of_work() as session:
            await session.execute(delete(ServiceTemplate).where(ServiceTemplate.code == code))


@pytest.fixture
async def addressed_template(live: Live) -> AsyncIterator[str]:
    """An operator's template: static-site with an environment naming the instance's address."""
    async with operator_template(live, "addressed", ENV) as code:
        yield code


SECRET_ENV = [
    {"name": "DB_PASSWORD", "generate": {"length": 24}, "secret": True},
    {"name": "DATABASE_URL", "value": "mysql://app:{secret:DB_PASSWORD}@{slug}-db/app"},
]


@pytest.fixture
async def secret_template(live: Live) -> AsyncIterator[str]:
    """An operator's template whose literal value names a generated one, as wordpress and ghost do."""
    async with operator_template(live, "secretive", SECRET_ENV) as code:
        yield code


async def test_the_environment_is_rendered_with_the_instance_s_own_url_host_and_slug(
    live: Live, addressed_template: str
) -> None:
    owner = await live.signup("Addressed Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "addressed", template=addressed_template)
    await live.work()
    body = await live.until_status(owner, site["id"], "running")

    [process] = processes_in(live.data_dir(site))
    environment = process.environ()
    assert environment["SITE_URL"] == body["url"]
    assert environment["SITE_HOST"] == urlsplit(body["url"]).hostname == f"{site['slug']}.localhost"
    assert environment["DB_HOST"] == f"{site['slug']}-db"


async def test_a_value_naming_a_generated_value_gets_the_instance_s_own_generated_value(
    live: Live, secret_template: str
) -> None:
    owner = await live.signup("Secretive Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "secretive", template=secret_template)
    await live.work()
    await live.until_status(owner, site["id"], "running")

    [process] = processes_in(live.data_dir(site))
    environment = process.environ()
    password = environment["DB_PASSWORD"]
    assert len(password) == 24
    assert environment["DATABASE_URL"] == f"mysql://app:{password}@{site['slug']}-db/app"


async def test_an_empty_literal_value_reaches_the_process_empty(live: Live) -> None:
    owner = await live.signup("Blank Co")
    await live.checkout(owner, "free")
    async with operator_template(live, "blank", [{"name": "FEATURE_FLAGS", "value": ""}]) as code:
        site = await live.ordered(owner, "blank", template=code)
        await live.work()
        await live.until_status(owner, site["id"], "running")

        [process] = processes_in(live.data_dir(site))
        assert process.environ()["FEATURE_FLAGS"] == ""
