"""Platform admins register a Hopsworks platform through the API: the connection test runs first (nothing is
recorded when the platform refuses the key or does not answer), the API key is stored encrypted and never
returned, a name is taken once, and deleting forgets the key."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import func, select

from jushostit.models import AuditEntry, Cluster, Platform, StoredSecret
from tests.clusters.conftest import closed_port
from tests.hopsworks_stand_in import API_KEY, HopsworksServer, HopsworksStandIn, hopsworks, hopsworks_server

__all__ = ["hopsworks", "hopsworks_server"]  # fixtures


def body(server: HopsworksServer | str, *, name: str | None = None, api_key: str = API_KEY) -> dict[str, object]:
    base_url = server if isinstance(server, str) else server.base_url
    return {"name": name or f"hops-{uuid.uuid4().hex[:6]}", "base_url": base_url, "api_key": api_key,
            "edition": "enterprise", "project_limits": {"owner": 5, "admin": 3, "member": 0}}


async def counts(session) -> tuple[int, int]:
    return (await session.scalar(select(func.count()).select_from(Platform)),
            await session.scalar(select(func.count()).select_from(StoredSecret).where(
                StoredSecret.owner_type == "platform")))


async def test_a_platform_is_registered_after_its_connection_test_and_its_key_never_comes_back(
    client, session, admin, hopsworks: HopsworksStandIn, hopsworks_server: HopsworksServer,
) -> None:
    boss = await admin()
    created = await client.post("/v1/admin/platforms", json=body(hopsworks_server), headers=boss.headers)
    assert created.status_code == 201, created.text
    platform = created.json()
    assert API_KEY not in created.text and "api_key" not in platform
    assert (platform["kind"], platform["edition"], platform["base_url"]) == (
        "hopsworks", "enterprise", hopsworks_server.base_url)
    assert platform["project_limits"] == {"owner": 5, "admin": 3, "member": 0}
    [probe] = hopsworks.requests("GET")  # the connection test: one harmless lookup, with the key
    assert probe.query["filter_by"] == "user_email:connection-check@jushostit.invalid"
    assert hopsworks.users == {}  # nothing made on the platform

    [secret] = (await session.scalars(select(StoredSecret).where(
        StoredSecret.owner_type == "platform", StoredSecret.owner_id == uuid.UUID(platform["id"])))).all()
    assert API_KEY not in secret.ciphertext
    listed = await client.get("/v1/admin/platforms", headers=boss.headers)
    assert [p["id"] for p in listed.json()["items"]] == [platform["id"]] and API_KEY not in listed.text
    [entry] = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "platform.registered"))).all()
    assert API_KEY not in str(entry.after) and entry.after["name"] == platform["name"]

    taken = await client.post("/v1/admin/platforms", json=body(hopsworks_server, name=platform["name"]),
                              headers=boss.headers)
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "platform_name_taken")

    deleted = await client.delete(f"/v1/admin/platforms/{platform['id']}", headers=boss.headers)
    assert deleted.status_code == 204 and await counts(session) == (0, 0)
    gone = await client.get(f"/v1/admin/platforms/{platform['id']}", headers=boss.headers)
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "platform_not_found")


async def test_a_refused_key_or_a_platform_that_does_not_answer_registers_nothing(
    client, session, admin, hopsworks: HopsworksStandIn, hopsworks_server: HopsworksServer,
) -> None:
    boss = await admin()
    refused = await client.post("/v1/admin/platforms", json=body(hopsworks_server, api_key="wrong.key"),
                                headers=boss.headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "platform_credentials_refused")
    unreachable = await client.post("/v1/admin/platforms", json=body(f"http://127.0.0.1:{closed_port()}"),
                                    headers=boss.headers)
    assert (unreachable.status_code, unreachable.json()["error"]["code"]) == (502, "platform_unreachable")
    assert await counts(session) == (0, 0)


async def test_only_platform_admins_manage_platforms(client, signup, hopsworks_server: HopsworksServer) -> None:
    someone = await signup()
    refused = await client.post("/v1/admin/platforms", json=body(hopsworks_server), headers=someone.headers)
    assert refused.status_code == 403
    assert (await client.get("/v1/admin/platforms", headers=someone.headers)).status_code == 403


async def test_a_platform_names_the_registered_cluster_its_projects_run_on(
    client, session, admin, hopsworks: HopsworksStandIn, hopsworks_server: HopsworksServer,
) -> None:
    boss = await admin()
    unknown = await client.post("/v1/admin/platforms", json={**body(hopsworks_server), "cluster": "nowhere"},
                                headers=boss.headers)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "cluster_not_found")
    assert await counts(session) == (0, 0)
    cluster = Cluster(name=f"hops-{uuid.uuid4().hex[:6]}", api_server="https://10.0.0.7:6443", tls_verified=True,
                      kubernetes_version="v1.31.4", base_domain="hops.example.com", ingress_class="nginx",
                      ingress_namespace="ingress", pod_cidr="10.42.0.0/16", service_cidr="10.43.0.0/16",
                      cpu_overcommit=Decimal(3), memory_overcommit=Decimal(1), headroom_percent=30)
    session.add(cluster)
    await session.flush()
    created = await client.post("/v1/admin/platforms", json={**body(hopsworks_server), "cluster": cluster.name},
                                headers=boss.headers)
    assert created.status_code == 201, created.text
    assert created.json()["cluster_id"] == str(cluster.id)
