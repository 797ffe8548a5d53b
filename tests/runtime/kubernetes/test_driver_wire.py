"""The Kubernetes driver on the API's wire format, against the stand-in served over HTTPS on loopback (the
product's own lightkube client, built from the kubeconfig registered and encrypted in the database): the exact
paths, verbs, content types and query parameters it sends, and what it makes of realistic answers — created and
updated objects, rollouts in progress and finished, failing pods and stalled rollouts, a conflict, a refusal, a
missing object, throttling with Retry-After, a server error and an answer that comes too late."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from typing import Any

import pytest

from jushostit.entitlement import Level
from jushostit.runtime.kubernetes.diff import DIGEST_ANNOTATION
from jushostit.runtime.kubernetes.directory import ClusterDirectory
from jushostit.runtime.kubernetes.driver import KubernetesDriver
from jushostit.runtime.kubernetes.manifests import render_account
from jushostit.runtime.protocol import AccountState
from tests.clusters.kube_workloads import APPLY, MERGE, path_of
from tests.runtime.kubernetes.conftest import Placed
from tests.runtime.kubernetes.states import CLUSTER, instance, state

BLOG = instance("ghost", "blog", number=1)  # an app and its MySQL: a Deployment and a StatefulSet
SITE = instance("static-site", "site", number=2)
APPLIED = {"fieldManager": "jushostit", "force": "true"}


def ours(placed: Placed, *instances: Any, **options: Any) -> AccountState:
    return replace(state(*instances, **options), account_id=placed.account_id)


def selector(placed: Placed, **more: str) -> str:
    labels = {"app.kubernetes.io/managed-by": "jushostit", "jushostit.io/account": str(placed.account_id), **more}
    return ",".join(f"{key}={value}" for key, value in labels.items())


def paths(placed: Placed, method: str) -> list[str]:
    return [call.path for call in placed.api.requests(method)]


async def test_a_first_pass_applies_every_object_server_side_namespace_first_and_the_route_last(
        placed: Placed) -> None:
    desired = ours(placed, BLOG)
    rendered = render_account(desired, CLUSTER)

    observed = await placed.driver.apply(desired)

    # It first lists what the cluster holds for the account, by our labels only, kind by kind.
    lists = placed.api.requests("GET")
    namespace = placed.namespace
    assert [call.path for call in lists[:11]] == [
        "/api/v1/namespaces", *(path_of(kind, namespace) for kind in (
            "ServiceAccount", "ResourceQuota", "LimitRange", "NetworkPolicy", "Secret", "PersistentVolumeClaim",
            "Service", "StatefulSet", "Deployment", "Ingress"))]
    assert all(call.query == {"labelSelector": selector(placed), "limit": "500"} for call in lists)
    # Then every rendered object, Secrets included, by server-side apply, in the manifests' apply order.
    applies = placed.api.requests("PATCH")
    assert [call.path for call in applies] == [path_of(m["kind"], m["metadata"].get("namespace"),
                                                       m["metadata"]["name"]) for m in rendered]
    assert applies[0].path == f"/api/v1/namespaces/{namespace}" and applies[-1].path.endswith("/ingresses/blog-000001")
    assert {call.content_type for call in applies} == {APPLY}
    assert all(call.query == APPLIED for call in applies)
    for call, manifest in zip(applies, rendered, strict=True):
        sent = {**call.body, "metadata": {k: v for k, v in call.body["metadata"].items() if k != "annotations"}}
        expected = {**manifest, "metadata": {k: v for k, v in manifest["metadata"].items() if k != "annotations"}}
        assert sent == expected
        assert len(call.body["metadata"]["annotations"][DIGEST_ANNOTATION]) == 64
    secret = placed.api.get("Secret", namespace, "blog-000001-db-secrets")
    assert secret is not None and base64.b64decode(secret["data"]["MYSQL_PASSWORD"]) == b"plain:DB_PASSWORD"
    # Created, not rolled out yet: provisioning, and every object was a write.
    assert observed.writes == len(rendered)
    assert observed.instances[BLOG.id].status == "provisioning"
    assert observed.instances[BLOG.id].reason == "waiting for the rollout to start"


async def test_running_only_once_the_cluster_reports_ready_replicas_and_a_pass_with_nothing_to_do_writes_nothing(
        placed: Placed) -> None:
    desired = ours(placed, BLOG)
    assert (await placed.driver.apply(desired)).instances[BLOG.id].status == "provisioning"
    placed.api.forget_requests()
    assert (await placed.driver.apply(desired)).instances[BLOG.id].status == "provisioning"

    placed.api.settle()
    placed.api.forget_requests()
    observed = await placed.driver.apply(desired)

    assert observed.instances[BLOG.id].status == "running" and observed.writes == 0
    assert placed.api.requests("PATCH") == [] and placed.api.requests("DELETE") == []

    # A change rolls out again: the Deployment's generation moves on, its controller has not seen it yet.
    larger = ours(placed, instance("ghost", "blog", number=1), levels={BLOG.id: Level.throttled})
    observed = await placed.driver.apply(larger)
    deployment = placed.api.get("Deployment", placed.namespace, "blog-000001")
    assert deployment is not None
    assert deployment["metadata"]["generation"] == 2 and deployment["status"]["observedGeneration"] == 1
    assert observed.instances[BLOG.id].status == "provisioning"
    placed.api.settle()
    assert (await placed.driver.apply(larger)).instances[BLOG.id].status == "throttled"


async def test_stopped_means_zero_replicas_and_no_ingress_with_the_data_kept_and_running_brings_them_back(
        placed: Placed) -> None:
    placed.api.ready = True
    assert (await placed.driver.apply(ours(placed, BLOG))).instances[BLOG.id].status == "running"
    placed.api.ready = False
    placed.api.forget_requests()

    stopping = await placed.driver.apply(ours(placed, BLOG, level=Level.stopped))

    namespace = placed.namespace
    assert paths(placed, "PATCH") == [path_of("StatefulSet", namespace, "blog-000001-db"),
                                      path_of("Deployment", namespace, "blog-000001")]
    assert [call.body["spec"]["replicas"] for call in placed.api.requests("PATCH")] == [0, 0]
    assert paths(placed, "DELETE") == [path_of("Ingress", namespace, "blog-000001")]
    assert stopping.instances[BLOG.id].status == "provisioning"  # its pods have not ended yet
    placed.api.settle()
    assert (await placed.driver.apply(ours(placed, BLOG, level=Level.stopped))).instances[BLOG.id].status == "stopped"
    assert placed.api.of_kind("Pod", namespace) == []
    assert {s["metadata"]["name"] for s in placed.api.of_kind("Secret", namespace)} == {
        "blog-000001-secrets", "blog-000001-db-secrets"}
    assert len(placed.api.of_kind("PersistentVolumeClaim", namespace)) == 2

    placed.api.forget_requests()
    placed.api.ready = True
    running = await placed.driver.apply(ours(placed, BLOG))
    assert paths(placed, "PATCH") == [path_of("StatefulSet", namespace, "blog-000001-db"),
                                      path_of("Deployment", namespace, "blog-000001"),
                                      path_of("Ingress", namespace, "blog-000001")]
    assert running.instances[BLOG.id].status == "running"


async def test_pruning_deletes_only_objects_labelled_as_the_account_s_that_it_no_longer_wants(placed: Placed) -> None:
    placed.api.ready = True
    await placed.driver.apply(ours(placed, BLOG, SITE))
    namespace = placed.namespace
    labels = {"app.kubernetes.io/managed-by": "jushostit", "jushostit.io/account": str(placed.account_id)}
    # Someone's own objects in the namespace: no labels at all, or another owner's.
    placed.api.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hand-made", "namespace": namespace},
                    "spec": {"ports": [{"port": 80}]}})
    placed.api.put({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "their-secret", "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "helm"}}})
    # Ours, of an instance that is no longer in the desired state, and a policy we no longer render.
    gone = str(uuid.uuid4())
    placed.api.put({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": "old-000009-data-content", "namespace": namespace, "labels": {**labels, "jushostit.io/instance": gone}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    placed.api.put({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {
        "name": "allow-everything", "namespace": namespace, "labels": labels}, "spec": {"podSelector": {}}})
    placed.api.forget_requests()

    # The site leaves the desired state (its deletion is recorded): its objects, data included, are pruned.
    observed = await placed.driver.apply(ours(placed, BLOG))

    assert paths(placed, "DELETE") == [
        path_of("Ingress", namespace, "site-000002"), path_of("Deployment", namespace, "site-000002"),
        path_of("Service", namespace, "site-000002"),
        path_of("PersistentVolumeClaim", namespace, "old-000009-data-content"),
        path_of("PersistentVolumeClaim", namespace, "site-000002-data-site"),
        path_of("Secret", namespace, "site-000002-secrets"), path_of("NetworkPolicy", namespace, "allow-everything")]
    assert placed.api.get("Service", namespace, "hand-made") is not None
    assert placed.api.get("Secret", namespace, "their-secret") is not None
    assert placed.api.requests("PATCH") == []
    assert observed.instances[BLOG.id].status == "running" and set(observed.instances) == {BLOG.id}


async def test_a_workload_scaled_up_behind_our_back_is_applied_again(placed: Placed) -> None:
    placed.api.ready = True
    await placed.driver.apply(ours(placed, BLOG, level=Level.stopped))
    deployment = placed.api.get("Deployment", placed.namespace, "blog-000001")
    assert deployment is not None
    deployment["spec"]["replicas"] = 3  # kubectl scale --replicas=3
    placed.api.put(deployment)
    placed.api.forget_requests()

    await placed.driver.apply(ours(placed, BLOG, level=Level.stopped))

    assert paths(placed, "PATCH") == [path_of("Deployment", placed.namespace, "blog-000001")]
    assert placed.api.requests("PATCH")[0].body["spec"]["replicas"] == 0


@pytest.mark.parametrize(("waiting", "last", "reason"), [
    ("CrashLoopBackOff", None, "CrashLoopBackOff (container app)"),
    ("ImagePullBackOff", None, "ImagePullBackOff (container app)"),
    ("CrashLoopBackOff", "OOMKilled", "OOMKilled (container app ran out of memory)"),
])
async def test_a_failing_pod_fails_its_instance_with_the_reason(placed: Placed, waiting: str, last: str | None,
                                                                 reason: str) -> None:
    placed.api.ready = True
    await placed.driver.apply(ours(placed, BLOG, SITE))
    placed.api.trouble(placed.namespace, "site-000002", waiting=waiting, last_terminated=last)

    observed = await placed.driver.apply(ours(placed, BLOG, SITE))

    assert observed.instances[SITE.id].status == "failed" and observed.instances[SITE.id].reason == reason
    assert observed.instances[SITE.id].error is None  # the cluster answered; nothing to retry sooner
    assert observed.instances[BLOG.id].status == "running"


async def test_a_rollout_past_its_progress_deadline_fails_with_that_reason(placed: Placed) -> None:
    await placed.driver.apply(ours(placed, SITE))
    deployment = placed.api.get("Deployment", placed.namespace, "site-000002")
    assert deployment is not None
    deployment["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1,
                            "conditions": [{"type": "Progressing", "status": "False",
                                            "reason": "ProgressDeadlineExceeded",
                                            "message": 'ReplicaSet "site-000002-6d4cf56db6" has timed out progressing.'}]}
    placed.api.put(deployment)

    observed = await placed.driver.apply(ours(placed, SITE))

    assert observed.instances[SITE.id].status == "failed"
    assert observed.instances[SITE.id].reason == \
        'ProgressDeadlineExceeded: ReplicaSet "site-000002-6d4cf56db6" has timed out progressing.'


async def test_a_refusal_of_the_namespace_fails_every_instance_and_a_conflict_fails_that_instance_only(
        placed: Placed) -> None:
    namespace = placed.namespace
    placed.api.script("PATCH", f"/api/v1/namespaces/{namespace}", 403, "Forbidden",
                      f'namespaces "{namespace}" is forbidden: User "system:serviceaccount:jushostit:control-plane" '
                      'cannot patch resource "namespaces" in API group "" at the cluster scope')

    refused = await placed.driver.apply(ours(placed, BLOG, SITE))

    assert paths(placed, "PATCH") == [f"/api/v1/namespaces/{namespace}"]  # nothing after it, not retried
    for seen in refused.instances.values():
        assert seen.status == "failed"
        assert seen.reason == "the platform's permissions on its cluster do not allow this (RBAC)"
        assert seen.error is not None and "403" in seen.error and "cannot patch" in seen.error

    placed.api.script("PATCH", path_of("Deployment", namespace, "site-000002"), 409, "Conflict",
                      'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas',
                      causes=[{"reason": "FieldManagerConflict", "field": ".spec.replicas"}])
    placed.api.forget_requests()

    observed = await placed.driver.apply(ours(placed, BLOG, SITE))

    site = observed.instances[SITE.id]
    assert site.status == "failed" and site.reason == "a conflicting change on the cluster; it is retried"
    assert site.error is not None and "409" in site.error and "conflict with" in site.error
    assert observed.instances[BLOG.id].status == "provisioning"  # its sibling converged
    assert paths(placed, "PATCH").count(path_of("Deployment", namespace, "site-000002")) == 1  # not retried
    assert placed.api.get("Ingress", namespace, "site-000002") is None  # nothing of it after its failure
    assert placed.api.get("Ingress", namespace, "blog-000001") is not None


async def test_throttling_and_server_errors_are_retried_with_backoff_and_a_long_retry_after_is_left_to_the_reconciler(
        placed: Placed) -> None:
    namespace = placed.namespace
    site = path_of("Deployment", namespace, "site-000002")
    placed.api.script("PATCH", site, 429, "TooManyRequests", "rate limited", times=2, headers={"Retry-After": "0"})
    placed.api.script("PATCH", site, 503, "ServiceUnavailable", "etcd leader changed", times=1)

    observed = await placed.driver.apply(ours(placed, SITE))

    assert paths(placed, "PATCH").count(site) == 4
    assert observed.instances[SITE.id].status == "provisioning" and observed.instances[SITE.id].error is None

    blog = path_of("Deployment", namespace, "blog-000001")
    placed.api.script("PATCH", blog, 429, "TooManyRequests", "rate limited", headers={"Retry-After": "60"})
    placed.api.forget_requests()
    later = await placed.driver.apply(ours(placed, BLOG, SITE))

    assert paths(placed, "PATCH").count(blog) == 1  # a minute is the reconciler's to wait, not this pass's
    assert later.instances[BLOG.id].status == "failed"
    assert later.instances[BLOG.id].error is not None and "429" in later.instances[BLOG.id].error
    assert later.instances[SITE.id].status == "provisioning"


async def test_removing_an_instance_deletes_its_objects_and_data_and_the_last_one_takes_the_namespace(
        placed: Placed) -> None:
    placed.api.ready = True
    await placed.driver.apply(ours(placed, BLOG, SITE))
    namespace = placed.namespace
    placed.api.forget_requests()

    await placed.driver.remove_instance(placed.account_id, SITE.id)

    lists = [c for c in placed.api.requests("GET") if c.query.get("labelSelector") ==
             selector(placed, **{"jushostit.io/instance": str(SITE.id)})]
    assert len(lists) == 6
    assert paths(placed, "DELETE") == [
        path_of("Ingress", namespace, "site-000002"), path_of("Deployment", namespace, "site-000002"),
        path_of("Service", namespace, "site-000002"), path_of("PersistentVolumeClaim", namespace,
                                                              "site-000002-data-site"),
        path_of("Secret", namespace, "site-000002-secrets")]
    assert placed.api.get("Namespace", None, namespace) is not None  # the blog is still there
    assert not [o for kind in ("Deployment", "Secret", "PersistentVolumeClaim")
                for o in placed.api.of_kind(kind, namespace) if o["metadata"]["name"].startswith("site-")]

    placed.api.forget_requests()
    await placed.driver.remove_instance(placed.account_id, BLOG.id)
    assert paths(placed, "DELETE")[-1] == f"/api/v1/namespaces/{namespace}"
    assert placed.api.get("Namespace", None, namespace) is None


async def test_an_account_with_no_instance_has_no_namespace_and_destroy_deletes_it(placed: Placed) -> None:
    await placed.driver.apply(ours(placed, SITE))
    placed.api.forget_requests()

    await placed.driver.destroy(placed.account_id)

    assert paths(placed, "DELETE") == [f"/api/v1/namespaces/{placed.namespace}"]
    assert placed.api.of_kind("Deployment", placed.namespace) == []
    await placed.driver.destroy(placed.account_id)  # 404: done already, no error
    assert paths(placed, "DELETE") == [f"/api/v1/namespaces/{placed.namespace}"] * 2
    assert (await placed.driver.apply(ours(placed))).writes == 0

    await placed.driver.apply(ours(placed, SITE))
    placed.api.forget_requests()
    emptied = await placed.driver.apply(ours(placed))
    assert emptied.writes == 1 and paths(placed, "DELETE") == [f"/api/v1/namespaces/{placed.namespace}"]


async def test_logs_are_the_tail_of_the_newest_app_pod_and_none_before_it_runs(placed: Placed) -> None:
    await placed.record(SITE)
    assert await placed.driver.logs(SITE.id, 3) == []  # not applied yet
    await placed.driver.apply(ours(placed, SITE))
    placed.api.settle()
    [pod] = placed.api.of_kind("Pod", placed.namespace)
    placed.api.pod_logs[pod["metadata"]["name"]] = ["starting", "listening on :8080", "GET / 200", "GET /a 404"]
    placed.api.forget_requests()

    assert await placed.driver.logs(SITE.id, 3) == ["listening on :8080", "GET / 200", "GET /a 404"]

    [listing, reading] = placed.api.requests("GET")
    assert listing.query["labelSelector"] == f"jushostit.io/instance={SITE.id},app.kubernetes.io/component=app"
    assert reading.path == f"/api/v1/namespaces/{placed.namespace}/pods/{pod['metadata']['name']}/log"
    assert reading.query == {"tailLines": "3", "container": "app", "follow": "false", "timestamps": "false"}


async def test_restart_is_a_rollout_restart_that_later_applies_keep(placed: Placed) -> None:
    await placed.record(SITE)
    placed.api.ready = True
    await placed.driver.apply(ours(placed, SITE))
    placed.api.forget_requests()

    await placed.driver.restart(SITE.id)

    [patch] = placed.api.requests("PATCH")
    assert patch.path == path_of("Deployment", placed.namespace, "site-000002") and patch.content_type == MERGE
    restarted_at = patch.body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    deployment = placed.api.get("Deployment", placed.namespace, "site-000002")
    assert deployment is not None and deployment["metadata"]["generation"] == 2
    assert (await placed.driver.apply(ours(placed, SITE))).instances[SITE.id].status == "provisioning"
    placed.api.settle()
    assert (await placed.driver.apply(ours(placed, SITE))).instances[SITE.id].status == "running"
    kept = placed.api.get("Deployment", placed.namespace, "site-000002")
    assert kept is not None
    assert kept["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == restarted_at


async def test_a_request_that_times_out_is_retried(placed: Placed) -> None:
    driver = KubernetesDriver(ClusterDirectory(placed.container.database, placed.container.secret_box, timeout=1))
    site = path_of("Deployment", placed.namespace, "site-000002")
    placed.api.stall("PATCH", site, 1.5)
    try:
        observed = await driver.apply(ours(placed, SITE))
    finally:
        await driver.close()

    assert paths(placed, "PATCH").count(site) == 2
    assert observed.instances[SITE.id].status == "provisioning" and observed.instances[SITE.id].error is None


async def test_observe_reads_what_runs_from_the_cluster_alone(placed: Placed) -> None:
    placed.api.ready = True
    await placed.driver.apply(ours(placed, BLOG, SITE, levels={SITE.id: Level.stopped}))

    seen = await placed.driver.observe(placed.account_id)

    assert {i: s.status for i, s in seen.instances.items()} == {BLOG.id: "running", SITE.id: "stopped"}
    await placed.driver.apply(ours(placed, BLOG, SITE, level=Level.throttled))
    assert (await placed.driver.observe(placed.account_id)).instances[BLOG.id].status == "throttled"
    assert placed.api.requests("PATCH")  # the pass above applied; observe itself never writes
    placed.api.forget_requests()
    await placed.driver.observe(placed.account_id)
    assert placed.api.requests("PATCH") == [] and placed.api.requests("DELETE") == []
