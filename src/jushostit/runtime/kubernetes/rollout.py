"""What an instance's workloads and pods say about it, by kubectl's own rollout rules. Pure: objects as the API
returns them (dicts) in, our observed status out.

- A workload is judged only once its controller has seen its latest spec (`status.observedGeneration >=
  metadata.generation`). A Deployment whose Progressing condition says `ProgressDeadlineExceeded`, or whose
  ReplicaFailure condition is true (its pods are refused: quota, Pod Security), has failed, with that reason. It
  is still rolling while fewer replicas are updated than wanted, while old ones are still there, or while fewer
  are available (ready) than updated. A StatefulSet rolls until its replicas are updated, on the update
  revision, and ready.
- A pod whose container waits in CrashLoopBackOff, ImagePullBackOff, CreateContainerConfigError or
  InvalidImageName, or was OOMKilled, fails its instance at once with that reason: the rollout would otherwise
  only say so at its deadline, minutes later. So does a pod no node has room for ("no capacity", with the
  scheduler's message), e.g. one resumed after the cluster filled up: never left waiting silently.
- `running` (or `throttled`) means every workload is rolled out with its pods ready; `stopped` that every
  workload is at 0 replicas with no pod left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jushostit.clusters.placement import NO_CAPACITY  # as placement refuses an order that does not fit
from jushostit.runtime.protocol import ObservedInstance

Obj = Mapping[str, Any]

FAILING_WAITS = ("CrashLoopBackOff", "ImagePullBackOff", "CreateContainerConfigError", "InvalidImageName")
OOM_KILLED = "OOMKilled"


@dataclass(frozen=True)
class Progress:
    state: Literal["done", "rolling", "failed"]
    reason: str | None = None


def _seen(obj: Obj) -> bool:
    """The controller has acted on the latest spec."""
    generation = (obj.get("metadata") or {}).get("generation") or 0
    return int((obj.get("status") or {}).get("observedGeneration") or 0) >= generation


def _wanted(obj: Obj) -> int:
    replicas = (obj.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def deployment_progress(deployment: Obj) -> Progress:
    status = deployment.get("status") or {}
    if not _seen(deployment):
        return Progress("rolling", "waiting for the rollout to start")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return Progress("failed", _with_message("ProgressDeadlineExceeded", condition))
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return Progress("failed", _with_message(condition.get("reason") or "ReplicaFailure", condition))
    wanted = _wanted(deployment)
    updated = int(status.get("updatedReplicas") or 0)
    if updated < wanted:
        return Progress("rolling", f"{updated} of {wanted} replicas updated")
    if int(status.get("replicas") or 0) > updated:
        return Progress("rolling", "old replicas are terminating")
    available = int(status.get("availableReplicas") or 0)
    if available < updated:
        return Progress("rolling", f"{available} of {updated} updated replicas ready")
    return Progress("done")


def statefulset_progress(statefulset: Obj) -> Progress:
    status = statefulset.get("status") or {}
    if not _seen(statefulset):
        return Progress("rolling", "waiting for the rollout to start")
    wanted = _wanted(statefulset)
    updated = int(status.get("updatedReplicas") or 0)
    if updated < wanted:
        return Progress("rolling", f"{updated} of {wanted} replicas updated")
    if status.get("currentRevision") != status.get("updateRevision"):
        return Progress("rolling", "replicas are moving to the new revision")
    ready = int(status.get("readyReplicas") or 0)
    if ready < wanted:
        return Progress("rolling", f"{ready} of {wanted} replicas ready")
    return Progress("done")


def progress(workload: Obj) -> Progress:
    return deployment_progress(workload) if workload.get("kind") == "Deployment" else statefulset_progress(workload)


def _with_message(reason: str, condition: Obj) -> str:
    message = condition.get("message")
    return f"{reason}: {message}" if message else reason


def scaled_down(workload: Obj) -> bool:
    """At 0 replicas, seen by its controller, with no replica left."""
    return _wanted(workload) == 0 and _seen(workload) and not int((workload.get("status") or {}).get("replicas") or 0)


def pod_failure(pod: Obj) -> str | None:
    """Why a pod cannot serve, when it never will on its own: its container's waiting reason, OOMKilled, or no
    node with room for it (the scheduler's own words)."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        message = str(condition.get("message") or "")
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable" and "Insufficient" in message):
            # Not a volume still binding (also `Unschedulable`, and over in seconds): the cluster is full.
            return f"{NO_CAPACITY}: {message}"
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        name = container.get("name", "?")
        last = ((container.get("lastState") or {}).get("terminated") or {}).get("reason")
        now = ((container.get("state") or {}).get("terminated") or {}).get("reason")
        if OOM_KILLED in (last, now):
            return f"{OOM_KILLED} (container {name} ran out of memory)"
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_WAITS:
            return f"{waiting['reason']} (container {name})"
    return None


def instance_status(*, run: bool, throttled: bool, problem: str | None, workloads: Sequence[Obj],
                    pods: Sequence[Obj]) -> ObservedInstance:
    """An instance's status from its own workloads and pods. `run`: it is meant to serve; `problem`: why it
    cannot be started (its template cannot be read)."""
    if not run:
        if all(scaled_down(w) for w in workloads):
            return ObservedInstance("stopped", problem)
        return ObservedInstance("provisioning", "stopping: waiting for its pods to end")
    if problem is not None:
        return ObservedInstance("failed", problem)
    for pod in pods:
        failure = pod_failure(pod)
        if failure is not None:
            return ObservedInstance("failed", failure)
    if not workloads:
        return ObservedInstance("provisioning", "waiting for its workloads to be created")
    rolling = None
    for workload in workloads:
        seen = progress(workload)
        if seen.state == "failed":
            return ObservedInstance("failed", seen.reason)
        if seen.state == "rolling" and rolling is None:
            rolling = seen.reason
    if rolling is not None:
        return ObservedInstance("provisioning", rolling)
    return ObservedInstance("throttled" if throttled else "running")
