"""The cluster API client against the stand-in over HTTPS: the registration's connection test and each way it
fails, in our error contract, and what the node observation reads."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from jushostit.clusters.kube import (
    REQUIRED_PERMISSIONS,
    ClusterRefused,
    ClusterUnreachable,
    check_connection,
    connect,
)
from jushostit.clusters.kubeconfig import accept_kubeconfig
from jushostit.kit.errors import AppError
from tests.clusters.conftest import closed_port, kubeconfig_for
from tests.clusters.kube_stand_in import VERSION, k3s_node, k8s_container, make_tls, pod

TIMEOUT = 5.0


async def failure(text: str) -> AppError:
    with pytest.raises(AppError) as raised:
        await check_connection(accept_kubeconfig(text), timeout=TIMEOUT)
    return raised.value


async def test_the_connection_test_reads_the_version_and_asks_every_permission_in_every_namespace(
    kube, kube_server
) -> None:
    version = await check_connection(accept_kubeconfig(kubeconfig_for(kube_server)), timeout=TIMEOUT)
    assert version == VERSION["gitVersion"]
    asked = [review["spec"]["resourceAttributes"] for review in kube.reviews]
    assert len(asked) == len(REQUIRED_PERMISSIONS)
    assert all(review["kind"] == "SelfSubjectAccessReview" for review in kube.reviews)
    assert all(attributes["namespace"] == "" for attributes in asked)
    # The reviews are asked concurrently, so the stand-in sees them in no fixed order.
    assert any({"verb": "create", "resource": "namespaces", "group": "", "namespace": ""}.items() <= review.items()
               for review in asked)
    labels = {permission.label for permission in REQUIRED_PERMISSIONS}
    assert {"create namespaces", "patch deployments.apps", "delete networkpolicies.networking.k8s.io",
            "list nodes", "get pods/log"} <= labels


async def test_missing_permissions_are_refused_with_each_one_named(kube, kube_server) -> None:
    kube.denied = {"create namespaces", "patch deployments.apps"}
    error = await failure(kubeconfig_for(kube_server))
    assert isinstance(error, ClusterRefused)
    assert (error.status_code, error.code) == (422, "cluster_permissions_missing")
    assert sorted(error.details["missing"]) == ["create namespaces", "patch deployments.apps"]


async def test_credentials_the_cluster_refuses_are_a_422(kube, kube_server) -> None:
    error = await failure(kubeconfig_for(kube_server, token="stolen-and-revoked"))
    assert (error.status_code, error.code) == (422, "cluster_credentials_refused")
    assert "stolen-and-revoked" not in error.message


async def test_a_certificate_the_kubeconfigs_ca_did_not_sign_is_a_tls_failure(kube, kube_server) -> None:
    with tempfile.TemporaryDirectory() as directory:
        other_ca = make_tls(Path(directory)).ca_pem
    error = await failure(kubeconfig_for(kube_server, ca_pem=other_ca))
    assert (error.status_code, error.code) == (502, "cluster_tls_failed")
    assert kube.reviews == []


async def test_insecure_skip_tls_verify_connects_without_the_ca(kube, kube_server) -> None:
    version = await check_connection(accept_kubeconfig(kubeconfig_for(kube_server, insecure=True)), timeout=TIMEOUT)
    assert version == VERSION["gitVersion"]


async def test_a_cluster_nobody_answers_for_is_unreachable(kube_server) -> None:
    error = await failure(kubeconfig_for(kube_server, url=f"https://127.0.0.1:{closed_port()}"))
    assert isinstance(error, ClusterUnreachable)
    assert (error.status_code, error.code) == (502, "cluster_unreachable")


@pytest.mark.parametrize(("outage", "version", "code"), [
    (503, None, "cluster_bad_answer"),
    (None, "<html>a load balancer's page</html>", "cluster_bad_answer"),
    (None, {"major": "1"}, "cluster_bad_answer"),
    (403, None, "cluster_permissions_missing"),
], ids=["5xx", "not json", "no gitVersion", "403"])
async def test_an_answer_that_is_not_a_kubernetes_apis_is_a_clear_error(kube, kube_server, outage, version, code) -> None:
    kube.outage = outage
    if version is not None:
        kube.version = version
    error = await failure(kubeconfig_for(kube_server))
    assert error.code == code


async def test_nodes_and_pods_are_listed_in_chunks(kube, kube_server) -> None:
    kube.nodes = [k3s_node("n1", cpu="16", memory_ki=32 * 1024 * 1024)]
    kube.pods = [pod(f"p{i}", "default", "n1", [k8s_container("c", {"cpu": "10m"})]) for i in range(501)]
    async with connect(accept_kubeconfig(kubeconfig_for(kube_server)), timeout=TIMEOUT) as api:
        assert [node.metadata.name for node in await api.nodes()] == ["n1"]
        assert len(await api.pods()) == 501
    pod_lists = [query for query in kube.list_requests if "continue" in query or query.get("limit") == "500"]
    assert [query.get("continue") for query in pod_lists][-2:] == [None, "500"]
