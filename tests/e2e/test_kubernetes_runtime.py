"""The Kubernetes issue's "Done means", over real HTTP: a real `jushostit serve` with `JUSHOSTIT_RUNTIME=kubernetes`
and a cluster registered through the admin API against the API server stand-in (HTTPS on loopback, in this
process, keeping what is applied to it). An order before any cluster is registered is refused with the reason;
then order → server-side apply of the namespace, its quota, limit range, network policies and service account,
the instance's Secret, PVC, Deployment, Service and Ingress → `provisioning` until the stand-in reports ready
replicas, then `running` → admin suspend → 0 replicas and no Ingress → `stopped` → unsuspend → replicas back →
`running` → delete (the account's last instance) → its objects and the namespace deleted."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clusters.conftest import kubeconfig_for
from tests.clusters.kube_stand_in import GIB_KI, TOKEN, KubeServer, k3s_node, make_tls
from tests.clusters.kube_workloads import APPLY, WorkloadStandIn
from tests.e2e.test_serve import FIRST_START_BUDGET, PASSWORD, Serve, login, signup, wait_for

pytestmark = pytest.mark.e2e

STATUS_BUDGET = 20.0
BASE_DOMAIN = "apps.example.net"
FIRST_PASS_KINDS = ["Namespace", "ServiceAccount", "ResourceQuota", "LimitRange", "NetworkPolicy", "NetworkPolicy",
                    "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "Secret", "PersistentVolumeClaim", "Service",
                    "Deployment", "Ingress"]


def kind_of(path: str) -> str:
    plural = path.rstrip("/").split("/")[-2]
    return {"namespaces": "Namespace", "serviceaccounts": "ServiceAccount", "resourcequotas": "ResourceQuota",
            "limitranges": "LimitRange", "networkpolicies": "NetworkPolicy", "secrets": "Secret",
            "persistentvolumeclaims": "PersistentVolumeClaim", "services": "Service", "deployments": "Deployment",
            "statefulsets": "StatefulSet", "ingresses": "Ingress"}[plural]


def test_an_order_on_the_kubernetes_runtime_is_applied_runs_when_ready_suspends_resumes_and_is_deleted(
        serve: Serve) -> None:
    with tempfile.TemporaryDirectory() as tls_dir, KubeServer(make_tls(Path(tls_dir))) as kube_server:
        cluster = WorkloadStandIn(nodes=[k3s_node("k3s-server", cpu="8", memory_ki=16 * GIB_KI)])
        kube_server.stand_in = cluster
        serve.extra_env = {"JUSHOSTIT_RUNTIME": "kubernetes", "JUSHOSTIT_KUBERNETES_TIMEOUT_SECONDS": "5"}
        serve.start(FIRST_START_BUDGET)
        base = serve.base_url
        customer = signup(serve, f"k8s-{uuid.uuid4().hex[:8]}@example.com")
        headers = {"Authorization": f"Bearer {customer['access_token']}"}
        account_id = customer["account"]["id"]
        admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
        assert serve.run("admin", "create", "--email", admin_email, "--password", PASSWORD).returncode == 0
        admin = {"Authorization": f"Bearer {login(base, admin_email)}"}
        namespace = f"jushostit-{account_id}"

        checkout = httpx.post(f"{base}/v1/accounts/{account_id}/checkout", json={"plan": "free"}, headers=headers,
                              timeout=30)
        assert checkout.status_code == 201, checkout.text

        def order() -> httpx.Response:
            return httpx.post(f"{base}/v1/accounts/{account_id}/instances",
                              json={"template": "static-site", "name": "site"}, headers=headers, timeout=30)

        # No cluster yet: nowhere to run it, said plainly; nothing is created.
        refused = order()
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "no_capacity"
        assert refused.json()["error"]["message"] == "no capacity: no cluster is registered"

        registered = httpx.post(f"{base}/v1/admin/clusters", headers=admin, timeout=30, json={
            "name": "k3s-e2e", "kubeconfig": kubeconfig_for(kube_server), "base_domain": BASE_DOMAIN})
        assert registered.status_code == 201, registered.text
        cluster_id = registered.json()["id"]

        def nodes_observed() -> bool:
            seen = httpx.get(f"{base}/v1/admin/clusters/{cluster_id}", headers=admin, timeout=30).json()
            return bool(seen["nodes"])

        wait_for(nodes_observed, STATUS_BUDGET, "the cluster's nodes to be observed")
        cluster.forget_requests()

        ordered = order()
        assert ordered.status_code == 201, ordered.text
        instance = ordered.json()
        slug = instance["slug"]
        assert instance["url"] == f"https://{slug}.{BASE_DOMAIN}/"

        def status() -> dict[str, Any]:
            answer = httpx.get(f"{base}/v1/instances/{instance['id']}", headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            return answer.json()

        # Applied server-side, in order: the namespace and its fences, then the instance, its route last.
        wait_for(lambda: cluster.get("Ingress", namespace, slug), STATUS_BUDGET, "the Ingress to be applied")
        applies = cluster.requests("PATCH")
        assert [kind_of(call.path) for call in applies] == FIRST_PASS_KINDS
        assert {call.content_type for call in applies} == {APPLY}
        assert all(call.query == {"fieldManager": "jushostit", "force": "true"} for call in applies)
        ingress = cluster.get("Ingress", namespace, slug)
        assert ingress is not None and ingress["spec"]["rules"][0]["host"] == f"{slug}.{BASE_DOMAIN}"

        # Applied is not running: only ready replicas are.
        assert status()["status"] == "provisioning"
        cluster.settle()
        wait_for(lambda: status()["status"] == "running", STATUS_BUDGET, "the instance to run once its pod is ready")

        def replicas() -> int | None:
            deployment = cluster.get("Deployment", namespace, slug)
            return None if deployment is None else int(deployment["spec"]["replicas"])

        suspend = httpx.post(f"{base}/v1/admin/accounts/{account_id}/suspend", json={"reason": "admin", "note": "e2e"},
                             headers=admin, timeout=30)
        assert suspend.status_code == 200, suspend.text
        wait_for(lambda: replicas() == 0 and cluster.get("Ingress", namespace, slug) is None, STATUS_BUDGET,
                 "0 replicas and no Ingress")
        assert status()["status"] != "stopped"  # until its pod has ended
        cluster.settle()
        wait_for(lambda: status()["status"] == "stopped", STATUS_BUDGET, "the instance to be stopped")
        assert cluster.get("PersistentVolumeClaim", namespace, f"{slug}-data-site") is not None  # its data kept

        unsuspend = httpx.post(f"{base}/v1/admin/accounts/{account_id}/unsuspend", json={"reason": "admin"},
                               headers=admin, timeout=30)
        assert unsuspend.status_code == 200, unsuspend.text
        wait_for(lambda: replicas() == 1 and cluster.get("Ingress", namespace, slug) is not None, STATUS_BUDGET,
                 "the replica and the Ingress back")
        cluster.settle()
        wait_for(lambda: status()["status"] == "running", STATUS_BUDGET, "the instance to run again")

        deleted = httpx.delete(f"{base}/v1/instances/{instance['id']}", headers=headers, timeout=30)
        assert deleted.status_code == 202, deleted.text
        wait_for(lambda: cluster.get("Namespace", None, namespace) is None, STATUS_BUDGET,
                 "the namespace to be deleted")
        deletes = [call.path for call in cluster.requests("DELETE")]
        assert f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{slug}-data-site" in deletes
        assert deletes[-1] == f"/api/v1/namespaces/{namespace}"
        wait_for(lambda: httpx.get(f"{base}/v1/instances/{instance['id']}", headers=headers, timeout=30).status_code
                 == 404, STATUS_BUDGET, "the instance to be gone")

        assert TOKEN not in serve.logs() and TOKEN not in serve.stderr_path.read_text()  # never logged
