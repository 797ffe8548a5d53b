"""What workloads and pods say about an instance (runtime.kubernetes.rollout, pure), by kubectl's rollout rules,
and when a failed call to the API is tried again (runtime.kubernetes.driver.retry_delay, pure)."""

from __future__ import annotations

from typing import Any

import pytest

from jushostit.runtime.kubernetes.driver import retry_delay
from jushostit.runtime.kubernetes.rollout import (
    deployment_progress,
    instance_status,
    pod_failure,
    statefulset_progress,
)


def deployment(*, generation: int = 1, wanted: int = 1, **status: Any) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": "blog", "generation": generation},
            "spec": {"replicas": wanted}, "status": status}


def statefulset(*, generation: int = 1, wanted: int = 1, **status: Any) -> dict[str, Any]:
    return {"kind": "StatefulSet", "metadata": {"name": "blog-db", "generation": generation},
            "spec": {"replicas": wanted}, "status": status}


DONE = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}


def test_a_deployment_is_judged_only_once_its_controller_has_seen_its_spec() -> None:
    assert deployment_progress(deployment(generation=2, **DONE)).state == "rolling"
    assert deployment_progress(deployment(**DONE)).state == "done"


@pytest.mark.parametrize(("status", "reason"), [
    ({"observedGeneration": 1, "replicas": 1}, "0 of 1 replicas updated"),
    ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1},
     "old replicas are terminating"),
    ({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}, "0 of 1 updated replicas ready"),
])
def test_a_deployment_rolls_until_its_replicas_are_updated_alone_and_available(status: dict[str, Any],
                                                                               reason: str) -> None:
    seen = deployment_progress(deployment(**status))
    assert (seen.state, seen.reason) == ("rolling", reason)


def test_a_deployment_past_its_deadline_or_whose_pods_are_refused_has_failed_with_the_reason() -> None:
    stalled = deployment(**{**DONE, "availableReplicas": 0, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "blog-5d" has timed out progressing.'}]})
    assert deployment_progress(stalled).state == "failed"
    assert deployment_progress(stalled).reason == 'ProgressDeadlineExceeded: ReplicaSet "blog-5d" has timed out progressing.'
    refused = deployment(observedGeneration=1, conditions=[
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
         "message": 'pods "blog-5d-x" is forbidden: exceeded quota: plan'}])
    assert deployment_progress(refused).reason == 'FailedCreate: pods "blog-5d-x" is forbidden: exceeded quota: plan'


def test_a_statefulset_rolls_until_its_replicas_are_updated_on_the_new_revision_and_ready() -> None:
    ready = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
             "currentRevision": "db-2", "updateRevision": "db-2"}
    assert statefulset_progress(statefulset(**ready)).state == "done"
    assert statefulset_progress(statefulset(**{**ready, "currentRevision": "db-1"})).state == "rolling"
    assert statefulset_progress(statefulset(**{**ready, "readyReplicas": 0})).reason == "0 of 1 replicas ready"
    assert statefulset_progress(statefulset(generation=2, **ready)).state == "rolling"


def pod(*containers: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "blog-5d-x"}, "status": {"phase": "Running", "containerStatuses": list(containers)}}


def test_a_pod_fails_its_instance_on_a_back_off_a_bad_configuration_or_an_oom_kill() -> None:
    waiting = {"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    assert pod_failure(pod(waiting)) == "ImagePullBackOff (container app)"
    oom = {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
           "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
    assert pod_failure(pod(oom)) == "OOMKilled (container app ran out of memory)"
    assert pod_failure(pod({"name": "app", "state": {"waiting": {"reason": "CreateContainerConfigError"}}})) == \
        "CreateContainerConfigError (container app)"
    # Pulling or creating is on its way, and a container that crashed once and runs again is running.
    assert pod_failure(pod({"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}})) is None
    assert pod_failure(pod({"name": "app", "state": {"running": {}}, "lastState": {"terminated": {"reason": "Error"}}})) \
        is None


def test_a_pod_no_node_has_room_for_fails_its_instance_with_no_capacity_but_a_volume_still_binding_does_not() -> None:
    def pending(message: str) -> dict[str, Any]:
        return {"metadata": {"name": "blog-5d-x"}, "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}}

    full = "0/3 nodes are available: 2 Insufficient cpu, 1 Insufficient memory."
    assert pod_failure(pending(full)) == f"no capacity: {full}"
    assert pod_failure(pending("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.")) is None


def test_an_instance_runs_when_every_workload_is_rolled_out_and_stops_when_none_has_a_replica_left() -> None:
    app, db = deployment(**DONE), statefulset(observedGeneration=1, replicas=1, updatedReplicas=1, readyReplicas=1)
    assert instance_status(run=True, throttled=False, problem=None, workloads=[app, db], pods=[]).status == "running"
    assert instance_status(run=True, throttled=True, problem=None, workloads=[app, db], pods=[]).status == "throttled"
    assert instance_status(run=True, throttled=False, problem=None, workloads=[], pods=[]).status == "provisioning"
    assert instance_status(run=True, throttled=False, problem="its service template is missing or invalid",
                           workloads=[app], pods=[]).status == "failed"

    scaling_down = deployment(generation=2, wanted=0, **DONE)
    assert instance_status(run=False, throttled=False, problem=None, workloads=[scaling_down], pods=[]).status == \
        "provisioning"
    scaled_down = deployment(generation=2, wanted=0, observedGeneration=2)
    assert instance_status(run=False, throttled=False, problem=None, workloads=[scaled_down], pods=[]).status == \
        "stopped"


@pytest.mark.parametrize(("attempt", "status", "retry_after", "delay"), [
    (0, 503, None, 0.25), (1, 500, None, 0.5), (2, None, None, 1.0),  # server errors and timeouts: backoff
    (3, 503, None, None),  # four attempts, then the reconciler's own backoff
    (0, 429, "2", 2.0), (0, 429, "0", 0.0), (0, 429, None, 0.25),  # Retry-After honoured
    (0, 429, "60", None),  # too long to wait inside a pass
    (0, 403, None, None), (0, 404, None, None), (0, 409, None, None), (0, 422, None, None),  # never by itself
])
def test_only_what_may_change_by_itself_is_tried_again(attempt: int, status: int | None, retry_after: str | None,
                                                       delay: float | None) -> None:
    assert retry_delay(attempt, status, retry_after) == delay
