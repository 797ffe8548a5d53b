"""Generated credentials are for the account's owners and admins only; logs are the instance's own output."""

from __future__ import annotations

import string
import uuid

from sqlalchemy import delete

from jushostit.catalog.repository import CatalogRepository
from jushostit.catalog.spec import TemplateSpec
from jushostit.models import BillingMode, Role, ServiceTemplate
from jushostit.vault import service as vault
from tests.live import Live, Signup, eventually, processes_in


async def _pro_account(live: Live) -> Signup:
    admin = await live.admin()
    owner = await live.signup("Secrets Co")
    await live.set_billing_mode(owner, BillingMode.prepaid)
    pending = (await live.checkout(owner, "pro"))["subscription"]
    paid = await live.client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=admin.headers)
    assert paid.status_code == 200, paid.text
    return owner


async def test_credentials_for_owners_and_admins_only(live: Live) -> None:
    owner = await _pro_account(live)
    # browserless cannot run on the local runtime (ordering refuses it): one ordered before, its TOKEN generated.
    browsers = await live.placed(owner, "browsers", "browserless")
    member = await live.add_member(owner, Role.member)
    account_admin = await live.add_member(owner, Role.admin)
    stranger = await live.signup("Stranger Co")
    path = f"/v1/instances/{browsers['id']}/credentials"

    response = await live.client.get(path, headers=owner.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] == browsers["url"]
    values = {v["name"]: v["value"] for v in body["values"]}
    assert set(values) == {"TOKEN"}  # only the template's secrets, not its plain settings (CONCURRENT, ...)
    token = values["TOKEN"]
    assert len(token) == 40 and set(token) <= set(string.ascii_letters + string.digits + "-_")
    async with live.container.database.sessionmaker() as session:
        stored = await vault.read(session, live.container.secret_box, owner_type="instance",
                                  owner_id=uuid.UUID(browsers["id"]))
    assert stored["TOKEN"] == token

    as_admin = await live.client.get(path, headers=account_admin.headers)
    assert as_admin.status_code == 200 and as_admin.json()["values"] == body["values"]
    as_member = await live.client.get(path, headers=member.headers)
    assert as_member.status_code == 403 and as_member.json()["error"]["code"] == "insufficient_role"
    assert token not in as_member.text
    as_stranger = await live.client.get(path, headers=stranger.headers)
    assert as_stranger.status_code == 404 and token not in as_stranger.text
    assert (await live.client.get(path)).status_code == 401
    # An API key needs instances:secrets for credentials; instances:read reads the instance, not its secrets.
    reader = await live.client.post("/v1/me/api-keys", json={"name": "reader", "scopes": ["instances:read"]},
                                    headers=owner.headers)
    revealer = await live.client.post("/v1/me/api-keys", json={"name": "ops", "scopes": ["instances:secrets"]},
                                      headers=owner.headers)
    assert reader.status_code == revealer.status_code == 201, (reader.text, revealer.text)
    with_read = await live.client.get(path, headers={"Authorization": f"Bearer {reader.json()['key']}"})
    assert with_read.status_code == 403 and with_read.json()["error"]["code"] == "insufficient_scope"
    assert token not in with_read.text
    with_secrets = await live.client.get(path, headers={"Authorization": f"Bearer {revealer.json()['key']}"})
    assert with_secrets.status_code == 200 and with_secrets.json()["values"] == body["values"]
    # Every read that revealed them is audited (who and which names, never the values); refusals reveal nothing.
    reads = await live.audit("instance.credentials_read", browsers["id"])
    assert len(reads) == 3
    assert all(entry.after == {"names": ["TOKEN"]} and token not in str(entry.after) for entry in reads)
    assert {entry.actor_type for entry in reads} == {"user", "api_key"}
    # The member still sees the instance itself, without its secrets.
    seen = await live.client.get(f"/v1/instances/{browsers['id']}", headers=member.headers)
    assert seen.status_code == 200 and token not in seen.text


async def test_logs_show_the_access_lines_of_requests_through_the_router(live: Live) -> None:
    owner = await live.signup("Logs Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "chatty")
    member = await live.add_member(owner, Role.member)
    stranger = await live.signup("Nosy Co")
    await live.work()
    await live.until_status(owner, site["id"], "running")

    probe = f"/probe-{uuid.uuid4().hex[:8]}.html"
    assert (await live.page(site["slug"], probe)).status_code == 404  # answered by the instance itself
    assert (await live.page(site["slug"])).status_code == 200

    async def logged() -> list[str]:
        response = await live.client.get(f"/v1/instances/{site['id']}/logs", params={"tail": 50},
                                         headers=member.headers)
        assert response.status_code == 200, response.text
        lines = response.json()["lines"]
        return lines if any(f'"GET {probe} HTTP/1.1" 404' in line for line in lines) and any(
            '"GET / HTTP/1.1" 200' in line for line in lines) else []

    lines = await eventually(logged, "the access lines in the instance log")
    tail = await live.client.get(f"/v1/instances/{site['id']}/logs", params={"tail": 1}, headers=owner.headers)
    assert tail.status_code == 200 and tail.json()["lines"] == lines[-1:]
    refused = await live.client.get(f"/v1/instances/{site['id']}/logs", headers=stranger.headers)
    assert refused.status_code == 404
    bad = await live.client.get(f"/v1/instances/{site['id']}/logs", params={"tail": 0}, headers=owner.headers)
    assert bad.status_code == 422


async def test_generated_secrets_reach_the_process_and_never_the_ready_email(live: Live) -> None:
    """A runnable template with a generated secret (a copy of static-site, stored as test data: the admin API
    refuses process forms by design)."""
    code = f"secret-site-{uuid.uuid4().hex[:6]}"
    async with live.container.database.unit_of_work() as session:
        static = await CatalogRepository(session).template_by_code("static-site")
        assert static is not None
        document = {**static.spec, "code": code, "env": [
            {"name": "SITE_PASSWORD", "generate": {"length": 24, "alphabet": "alnum"}, "secret": True},
            {"name": "SITE_URL", "value": "{url}"},
        ]}
        spec = TemplateSpec.model_validate(document)
        await CatalogRepository(session).insert_template_if_missing(code, spec.kind, spec.model_dump(mode="json"), "admin")
    try:
        owner = await live.signup("Canary Co")
        await live.checkout(owner, "free")
        site = await live.ordered(owner, "canary", template=code)
        await live.work()
        await live.until_status(owner, site["id"], "running")

        credentials = await live.client.get(f"/v1/instances/{site['id']}/credentials", headers=owner.headers)
        assert credentials.status_code == 200
        [password] = [v["value"] for v in credentials.json()["values"] if v["name"] == "SITE_PASSWORD"]
        [process] = processes_in(live.data_dir(site))
        environ = process.environ()
        assert environ["SITE_PASSWORD"] == password and environ["SITE_URL"] == site["url"]

        [ready] = await live.emails_of(owner, "instance_ready")
        assert site["url"] in ready.body
        assert password not in ready.body and password not in ready.subject
        shown = await live.client.get(f"/v1/instances/{site['id']}", headers=owner.headers)
        assert password not in shown.text
        logs = await live.client.get(f"/v1/instances/{site['id']}/logs", headers=owner.headers)
        assert password not in logs.text
    finally:
        async with live.container.database.unit_of_work() as session:
            await session.execute(delete(ServiceTemplate).where(ServiceTemplate.code == code))
