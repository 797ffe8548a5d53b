"""The admin API of clusters on the real app and database, with the Kubernetes API stand-in over HTTPS: a
registration passes the connection test or records nothing, the kubeconfig is stored encrypted and never shown,
nodes and their utilisation are listed, cordons are audited, and a cluster with accounts on it stays."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from jushostit.clusters import service
from jushostit.clusters.observation import NodeSummary
from jushostit.clusters.placement import BURSTABLE_POD
from jushostit.clusters.schemas import ClusterCreate
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import unit_of_work, utcnow
from jushostit.models import AuditEntry, Cluster, StoredSecret
from tests.clusters.conftest import closed_port, kubeconfig_for
from tests.clusters.kube_stand_in import TOKEN
from tests.test_logs_no_secrets import everything_logged, log_capture

__all__ = ["log_capture"]

GIB_MIB = 1024


def registration(kube_server, **changes: Any) -> dict[str, Any]:
    return {"name": f"k3s-{uuid.uuid4().hex[:6]}", "kubeconfig": kubeconfig_for(kube_server),
            "base_domain": "apps.example.com", **changes}


async def counts(session) -> tuple[int, int, int]:
    clusters = await session.scalar(select(func.count()).select_from(Cluster))
    secrets = await session.scalar(select(func.count()).where(StoredSecret.owner_type == "cluster"))
    audited = await session.scalar(select(func.count()).where(AuditEntry.action == "cluster.registered"))
    return clusters, secrets, audited


async def test_a_cluster_is_registered_after_its_connection_test_and_its_kubeconfig_never_comes_back(
    client, session, admin, kube, kube_server, container
) -> None:
    me = await admin()
    body = registration(kube_server, cpu_overcommit=4, headroom_percent=35, cert_issuer="letsencrypt-prod")
    response = await client.post("/v1/admin/clusters", json=body, headers=me.headers)

    assert response.status_code == 201, response.text
    read = response.json()
    assert read["name"] == body["name"]
    assert read["api_server"] == kube_server.base_url and read["tls_verified"] is True
    assert read["kubernetes_version"] == "v1.31.4+k3s1"
    assert read["policy"] == {"cpu_overcommit": 4.0, "memory_overcommit": 1.0, "headroom_percent": 35}
    assert (read["ingress_class"], read["ingress_namespace"], read["pod_cidr"], read["service_cidr"]) == (
        "traefik", "kube-system", "10.42.0.0/16", "10.43.0.0/16")
    assert read["nodes"] == [] and read["accounts"] == 0 and not read["cordoned"]
    assert TOKEN not in response.text and "kubeconfig" not in read

    listed = await client.get("/v1/admin/clusters", headers=me.headers)
    assert TOKEN not in listed.text and [c["name"] for c in listed.json()["items"]] == [body["name"]]

    stored = await session.scalar(select(StoredSecret).where(StoredSecret.owner_id == uuid.UUID(read["id"])))
    assert stored is not None and (stored.owner_type, stored.name) == ("cluster", "kubeconfig")
    assert TOKEN not in stored.ciphertext
    kept = yaml.safe_load(container.secret_box.decrypt(stored.ciphertext))
    assert kept["users"] == [{"name": "default", "user": {"token": TOKEN}}]
    # This cluster's entry: tests on committed data register clusters too, and the audit log keeps theirs.
    entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "cluster.registered",
                                                          AuditEntry.target_id == read["id"]))
    assert entry is not None
    assert TOKEN not in json.dumps(entry.after) and entry.after["name"] == body["name"]


EXEC_KUBECONFIG = yaml.safe_dump({
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    "users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "sh"}}}],
})


@pytest.mark.parametrize(("arrange", "status", "code"), [
    (lambda kube, server: EXEC_KUBECONFIG, 422, "invalid_kubeconfig"),
    (lambda kube, server: kubeconfig_for(server, token="rotated"), 422, "cluster_credentials_refused"),
    (lambda kube, server: setattr(kube, "denied", {"create namespaces"}), 422, "cluster_permissions_missing"),
    (lambda kube, server: setattr(kube, "outage", 503), 502, "cluster_bad_answer"),
    (lambda kube, server: kubeconfig_for(server, url=f"https://127.0.0.1:{closed_port()}"), 502,
     "cluster_unreachable"),
], ids=["exec plugin", "refused credentials", "missing permission", "outage", "nobody listening"])
async def test_a_registration_that_fails_records_nothing(client, session, admin, kube, kube_server, arrange,
                                                         status, code) -> None:
    """`arrange` breaks the cluster, or returns the kubeconfig to register with."""
    me = await admin()
    before = await counts(session)
    body = registration(kube_server)
    body["kubeconfig"] = arrange(kube, kube_server) or body["kubeconfig"]
    response = await client.post("/v1/admin/clusters", json=body, headers=me.headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert await counts(session) == before


async def test_a_name_in_use_is_refused_before_the_cluster_is_asked(client, admin, kube, kube_server) -> None:
    me = await admin()
    body = registration(kube_server)
    assert (await client.post("/v1/admin/clusters", json=body, headers=me.headers)).status_code == 201
    asked = len(kube.reviews)
    again = await client.post("/v1/admin/clusters", json=body, headers=me.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "cluster_name_taken"
    assert len(kube.reviews) == asked


@pytest.mark.parametrize(("field", "value"), [
    ("base_domain", "Apps.Example.com"), ("pod_cidr", "10.42.0.1/16"), ("pod_cidr", "fd00::/8"),
    ("cpu_overcommit", 0.5), ("headroom_percent", 95), ("name", "Not_A_Label"), ("kubeconfig", ""),
    ("kubeconfig_path", "/root/.kube/config"),
])
async def test_bad_registration_fields_are_refused_as_validation_errors(client, admin, kube_server, field,
                                                                       value) -> None:
    me = await admin()
    response = await client.post("/v1/admin/clusters", json={**registration(kube_server), field: value},
                                 headers=me.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


async def registered(session, box: SecretBox, kube_server) -> Cluster:
    """A cluster registered as the route does it (in a unit of work: it queues its first observation)."""
    async with unit_of_work(session):
        return await service.register(session, box, data=ClusterCreate(**registration(kube_server)), timeout=5)


def summary(name: str, *, ready: str = "True", memory_limits_mib: int = 0, pods: int = 0) -> NodeSummary:
    return NodeSummary(name, 16_000, 32 * GIB_MIB, 15_000, 30_000, 110, 0, 0, 0, memory_limits_mib, pods,
                       {"Ready": ready, "MemoryPressure": "False"})


async def test_the_listing_shows_each_nodes_utilisation_against_the_policy(
    client, session, admin, kube, kube_server, container
) -> None:
    me = await admin()
    cluster = await registered(session, container.secret_box, kube_server)
    await service.record_nodes(session, cluster_id=cluster.id, now=utcnow(), nodes=[
        summary("worker-1", memory_limits_mib=10 * GIB_MIB, pods=10), summary("worker-2", ready="False"),
    ])
    response = await client.get(f"/v1/admin/clusters/{cluster.id}", headers=me.headers)
    assert response.status_code == 200, response.text
    read = response.json()
    assert read["observed_at"] is not None and read["observe_error"] is None
    one, two = read["nodes"]
    # 30,000 MiB x 1 x (1 - 0.3) = 21,000 MiB of limits; 10 GiB placed leaves room for 10 pods of 1 GiB.
    assert one["utilisation"]["memory_limits_budget_mib"] == 21_000
    assert one["utilisation"]["memory_limits_mib"] == 10_240
    assert one["utilisation"]["burstable_pods_left"] == 10
    assert (one["takes_placements"], two["takes_placements"], two["refusal"]) == (True, False, "not Ready")
    # The cluster's sums are over the nodes that take placements.
    assert read["utilisation"]["memory_limits_budget_mib"] == 21_000
    assert read["utilisation"]["burstable_pods_left"] == 10


async def test_cordons_are_audited_and_take_nodes_and_clusters_out_of_placement(
    client, session, admin, kube, kube_server, container
) -> None:
    me = await admin()
    cluster = await registered(session, container.secret_box, kube_server)
    await service.record_nodes(session, cluster_id=cluster.id, now=utcnow(), nodes=[summary("worker-1")])
    base = f"/v1/admin/clusters/{cluster.id}"

    node = await client.post(f"{base}/nodes/worker-1/cordon", headers=me.headers)
    assert node.status_code == 200 and node.json()["nodes"][0]["refusal"] == "cordoned"
    assert node.json()["utilisation"]["burstable_pods_left"] == 0
    cordoned = await client.post(f"{base}/cordon", headers=me.headers)
    assert cordoned.json()["cordoned"] is True
    assert (await client.post(f"{base}/cordon", headers=me.headers)).status_code == 200  # again: no change
    # Kubernetes learns of a new observation: our cordon of the node is kept.
    await service.record_nodes(session, cluster_id=cluster.id, now=utcnow(), nodes=[summary("worker-1")])
    assert (await client.get(base, headers=me.headers)).json()["nodes"][0]["cordoned"] is True
    await client.post(f"{base}/uncordon", headers=me.headers)
    back = await client.post(f"{base}/nodes/worker-1/uncordon", headers=me.headers)
    assert back.json()["nodes"][0]["takes_placements"] is True and back.json()["cordoned"] is False

    actions = (await session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == str(cluster.id))
                                     .order_by(AuditEntry.seq))).all()
    assert actions == ["cluster.registered", "cluster.node_cordoned", "cluster.cordoned", "cluster.uncordoned",
                       "cluster.node_uncordoned"]
    missing = await client.post(f"{base}/nodes/no-such-node/cordon", headers=me.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "node_not_found"


async def test_a_cluster_with_an_account_on_it_cannot_be_deleted_and_an_empty_one_goes_with_its_kubeconfig(
    client, session, admin, kube, kube_server, container
) -> None:
    me = await admin()
    cluster = await registered(session, container.secret_box, kube_server)
    await service.record_nodes(session, cluster_id=cluster.id, now=utcnow(), nodes=[summary("worker-1")])
    await service.place_account(session, account_id=uuid.UUID(me.account_id), pods=[BURSTABLE_POD])
    refused = await client.delete(f"/v1/admin/clusters/{cluster.id}", headers=me.headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "cluster_in_use"
    assert refused.json()["error"]["details"] == {"accounts": 1}

    other = await registered(session, container.secret_box, kube_server)
    gone = await client.delete(f"/v1/admin/clusters/{other.id}", headers=me.headers)
    assert gone.status_code == 204
    assert await session.scalar(select(func.count()).where(StoredSecret.owner_id == other.id)) == 0
    assert (await client.get(f"/v1/admin/clusters/{other.id}", headers=me.headers)).status_code == 404


async def test_the_kubeconfigs_credentials_never_reach_the_logs(client, session, admin, kube, kube_server,
                                                                log_capture) -> None:
    """At DEBUG, through a registration that works, one the cluster refuses and one with an exec plugin."""
    capfd, caplog = log_capture
    me = await admin()
    canary = f"canary-token-{uuid.uuid4().hex}"
    kube.token = canary
    ok = await client.post("/v1/admin/clusters", json=registration(kube_server, kubeconfig=kubeconfig_for(
        kube_server, token=canary)), headers=me.headers)
    assert ok.status_code == 201, ok.text
    refused = await client.post("/v1/admin/clusters", json=registration(kube_server, kubeconfig=kubeconfig_for(
        kube_server, token=f"{canary}-revoked")), headers=me.headers)
    assert refused.status_code == 422
    plugin = yaml.safe_load(kubeconfig_for(kube_server))
    plugin["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": canary}}
    refused_plugin = await client.post("/v1/admin/clusters", json=registration(
        kube_server, kubeconfig=yaml.safe_dump(plugin)), headers=me.headers)
    assert refused_plugin.status_code == 422
    assert canary not in refused.text + refused_plugin.text
    assert canary not in everything_logged(capfd, caplog)
