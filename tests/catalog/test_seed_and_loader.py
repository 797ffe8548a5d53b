"""Seeding the shipped plans and templates, and the loader's errors for broken files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jushostit.catalog import loader
from jushostit.catalog.service import seed
from jushostit.models import AuditEntry, Plan, ServiceTemplate

BUILTIN_PLANS = {"free", "starter", "pro", "enterprise"}
BUILTIN_TEMPLATES = {"browserless", "ghost", "n8n", "static-site", "wordpress"}


async def _audit_count(session, action: str | None = None) -> int:
    stmt = select(func.count()).select_from(AuditEntry)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    return int(await session.scalar(stmt) or 0)


def _copy_data(tmp_path: Path) -> Path:
    """A writable copy of the shipped catalog directory, to add or break files in."""
    target = tmp_path / "data"
    shutil.copytree(str(loader.data_dir()), target)
    return target


async def test_the_container_seeded_the_shipped_catalog_and_seeding_again_changes_nothing(session) -> None:
    plans = {p.code: p for p in (await session.scalars(select(Plan))).all()}
    templates = {t.code: t for t in (await session.scalars(select(ServiceTemplate))).all()}
    assert BUILTIN_PLANS <= set(plans) and BUILTIN_TEMPLATES <= set(templates)
    assert plans["starter"].price_minor == 900 and plans["starter"].currency == "EUR"
    assert all(templates[c].source == "builtin" for c in BUILTIN_TEMPLATES)
    shipped = {spec.code: spec for spec in loader.load_templates()}
    assert templates["static-site"].spec == shipped["static-site"].model_dump(mode="json")

    entries = await _audit_count(session)
    report = await seed(session)
    assert (report.plans_added, report.templates_added, report.templates_updated) == ([], [], [])
    assert await _audit_count(session) == entries  # nothing changed, nothing recorded
    assert await session.scalar(select(func.count()).select_from(Plan).where(Plan.code.in_(BUILTIN_PLANS))) == 4


async def test_seeding_never_overwrites_a_plan_but_restores_a_shipped_template(session) -> None:
    starter = await session.scalar(select(Plan).where(Plan.code == "starter"))
    starter.price_minor = 1234  # an admin changed the price
    static = await session.scalar(select(ServiceTemplate).where(ServiceTemplate.code == "static-site"))
    original_spec = static.spec
    static.spec = {**original_spec, "name": "Edited by hand"}
    await session.flush()

    report = await seed(session)
    assert report.plans_added == [] and report.templates_updated == ["static-site"]
    session.expire_all()
    starter = await session.scalar(select(Plan).where(Plan.code == "starter"))
    static = await session.scalar(select(ServiceTemplate).where(ServiceTemplate.code == "static-site"))
    assert starter.price_minor == 1234
    assert static.spec == original_spec
    entry = await session.scalar(
        select(AuditEntry).where(AuditEntry.action == "template.updated").order_by(AuditEntry.seq.desc()).limit(1)
    )
    assert entry.target_id == "static-site" and entry.actor_type == "system"
    assert entry.after == {"spec": original_spec}


async def test_seeding_inserts_a_missing_plan_once(session, tmp_path) -> None:
    data = _copy_data(tmp_path)
    with (data / "plans.yaml").open("a") as plans:
        plans.write(
            "- code: test-extra\n  name: Extra\n  price_minor: 500\n  currency: JPY\n  interval: year\n"
            "  billing_modes: [card]\n"
            "  quotas: {cpu_millicores: 1, memory_mib: 2, storage_gib: 3, max_instances: 4}\n"
        )
    first = await seed(session, directory=data)
    assert first.plans_added == ["test-extra"]
    second = await seed(session, directory=data)
    assert second.plans_added == []
    plan = await session.scalar(select(Plan).where(Plan.code == "test-extra"))
    assert (plan.price_minor, plan.currency, plan.interval, plan.billing_modes) == (500, "JPY", "year", ["card"])
    assert plan.quotas == {"cpu_millicores": 1, "memory_mib": 2, "storage_gib": 3, "max_instances": 4,
                           "concurrent_sessions": 0, "session_max_minutes": 0}  # the defaults: no browser sessions
    assert await _audit_count(session, "plan.seeded") >= 1
    seeded = await session.scalar(select(AuditEntry).where(AuditEntry.target_id == str(plan.id)))
    assert seeded.action == "plan.seeded" and seeded.after["price_minor"] == 500


async def test_a_broken_template_is_an_error_naming_the_file_and_field_and_nothing_is_written(
    session, tmp_path
) -> None:
    data = _copy_data(tmp_path)
    ghost = (data / "templates" / "ghost.yaml").read_text()
    (data / "templates" / "ghost.yaml").write_text(ghost.replace("port: 2368", "port: not-a-port", 1))
    with pytest.raises(loader.CatalogError) as raised:
        loader.load_templates(data)
    assert "templates/ghost.yaml" in str(raised.value) and "port" in str(raised.value)

    # Seeding validates everything before it writes anything.
    with (data / "plans.yaml").open("a") as plans:
        plans.write(
            "- {code: never-written, name: N, price_minor: 1, currency: EUR, billing_modes: [card],"
            " quotas: {cpu_millicores: 1, memory_mib: 1, storage_gib: 1, max_instances: 1}}\n"
        )
    entries = await _audit_count(session)
    with pytest.raises(loader.CatalogError, match=r"templates/ghost\.yaml: port"):
        await seed(session, directory=data)
    assert await session.scalar(select(Plan).where(Plan.code == "never-written")) is None
    assert await _audit_count(session) == entries


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda t: t.replace("default_tier: small", "default_tier: huge"), "default_tier"),
        (lambda t: t + "surprise: true\n", "surprise"),
        (lambda t: t.replace("uid: 101", "uid: 0"), "uid"),
        (lambda t: t.replace("{port}\"]", "{oops}\"]"), "process: Value error, unknown placeholder {oops}"),
    ],
    ids=["unknown-default-tier", "unknown-field", "root-uid", "unknown-placeholder"],
)
def test_template_errors_name_the_field(tmp_path, edit, names) -> None:
    data = _copy_data(tmp_path)
    path = data / "templates" / "static-site.yaml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(loader.CatalogError) as raised:
        loader.load_templates(data)
    message = str(raised.value)
    assert message.startswith("templates/static-site.yaml: ") and names in message


def test_a_broken_plan_names_its_position_and_field(tmp_path) -> None:
    data = _copy_data(tmp_path)
    text = (data / "plans.yaml").read_text()
    (data / "plans.yaml").write_text(text.replace("price_minor: 900", "price_minor: -900", 1))
    with pytest.raises(loader.CatalogError, match=r"plans\.yaml\[1\]: price_minor"):
        loader.load_plans(data)


async def test_a_plan_in_an_unknown_currency_stops_the_seed(session, tmp_path) -> None:
    data = _copy_data(tmp_path)
    text = (data / "plans.yaml").read_text()
    (data / "plans.yaml").write_text(text.replace("currency: EUR", "currency: ABC", 1))
    with pytest.raises(loader.CatalogError, match=r"plans\.yaml\[0\]: currency: unknown currency 'ABC'"):
        await seed(session, directory=data)
