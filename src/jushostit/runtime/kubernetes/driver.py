"""The `kubernetes` runtime (`JUSHOSTIT_RUNTIME=kubernetes`): each account's desired state applied to the cluster
it is placed on, through lightkube's async client, and observed back from the API.

- **Server-side apply** of every rendered object (`PATCH` with `Content-Type: application/apply-patch+yaml`,
  `fieldManager=jushostit`, `force=true`), the namespace first and the route last (`manifests.APPLY_ORDER`). We
  force because these objects are ours: the rendered state is the truth, and a field someone else took (a
  `kubectl edit`, a `kubectl scale` of a suspended instance) must come back to us rather than fail the pass with
  a conflict nobody would resolve. Fields set by another manager that we never send (a rollout restart's
  annotation) are left alone. Only what changed is applied (`diff`): a pass that changes nothing writes nothing.
- **Observed, not assumed**: after applying, the instance's Deployments, StatefulSets and pods are read back and
  judged by kubectl's rollout rules (`rollout`): `running` means its pods are ready; a failing pod or a stalled
  rollout is `failed` with its reason; a rollout in progress is `provisioning`, looked at again by a follow-up.
- **Pruning** by our labels only (`diff`): an object without `app.kubernetes.io/managed-by: jushostit` and the
  account's label is never listed, so never deleted, and an instance's data goes only through `remove_instance`.
- **Failures**: lightkube never retries, so each call is retried here with backoff when the answer may change by
  itself (429, honouring a short Retry-After; 5xx; a timeout or a dropped connection), a few times; then, like a
  403 (RBAC), a 409 (a conflict) or a refused object, the instance is `failed` with a short reason and the error
  for admins, and the reconciler retries it with its own backoff. A 404 on delete is done already.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx2
import msgspec
import structlog
from lightkube import ApiError, AsyncClient
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import (
    LimitRange,
    Namespace,
    PersistentVolumeClaim,
    Pod,
    ResourceQuota,
    Secret,
    Service,
    ServiceAccount,
)
from lightkube.resources.networking_v1 import Ingress, NetworkPolicy
from lightkube.types import PatchType

from jushostit.clusters.kube import FIELD_MANAGER, LIST_CHUNK, ClusterUnreachable
from jushostit.runtime.kubernetes.cluster import ClusterSettings
from jushostit.runtime.kubernetes.diff import (
    WORKLOAD_KINDS,
    Found,
    SecretKey,
    plan_changes,
    stamped,
    wanted_secrets,
)
from jushostit.runtime.kubernetes.directory import ClusterDirectory
from jushostit.runtime.kubernetes.manifests import (
    APP,
    APPLY_ORDER,
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    Manifest,
    account_labels,
    apply_order,
    namespace_name,
    render_account,
    render_instance,
)
from jushostit.runtime.kubernetes.rollout import instance_status
from jushostit.runtime.protocol import AccountState, DesiredInstance, Observed, ObservedInstance

log = structlog.get_logger(__name__)

T = TypeVar("T")

RESOURCES: dict[str, Any] = {
    "Namespace": Namespace, "ServiceAccount": ServiceAccount, "ResourceQuota": ResourceQuota,
    "LimitRange": LimitRange, "NetworkPolicy": NetworkPolicy, "Secret": Secret,
    "PersistentVolumeClaim": PersistentVolumeClaim, "Service": Service, "StatefulSet": StatefulSet,
    "Deployment": Deployment, "Ingress": Ingress,
}
assert set(RESOURCES) == set(APPLY_ORDER)
NAMESPACED_KINDS = tuple(kind for kind in APPLY_ORDER if kind != "Namespace")
INSTANCE_KINDS = ("Secret", "PersistentVolumeClaim", "Service", "StatefulSet", "Deployment", "Ingress")
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets, so kubectl reads it too
NOT_PLACED = "the account is not placed on a cluster"

ATTEMPTS = 4
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 4.0
RETRY_AFTER_MAX_SECONDS = 10.0  # asked to wait longer: give up now, the reconciler retries later


def retry_delay(attempt: int, status: int | None, retry_after: str | None) -> float | None:
    """Seconds to wait before trying again a call whose attempt number `attempt` (from 0) failed with `status`
    (None: no answer, a timeout or a dropped connection); None not to try again. Only what may change by
    itself is retried: 429 (after its Retry-After, when short), 5xx and no answer, doubling from 0.25 s."""
    if attempt + 1 >= ATTEMPTS or (status is not None and status != 429 and status < 500):
        return None
    backoff = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** attempt)
    if status == 429 and retry_after is not None:
        try:
            asked = float(retry_after)
        except ValueError:  # an HTTP date: the API server sends seconds
            return backoff
        return None if asked > RETRY_AFTER_MAX_SECONDS else max(0.0, asked)
    return backoff


class ClusterCallFailed(Exception):
    """A call to the cluster's API failed for good (after its retries, or at once when retrying cannot help)."""

    def __init__(self, what: str, status: int | None, message: str) -> None:
        super().__init__(f"{what}: {status if status is not None else 'no answer'}: {message}"[:1000])
        self.status = status

    @property
    def reason(self) -> str:
        """What the customer reads (the error itself is for admins)."""
        if self.status == 403:
            return "the platform's permissions on its cluster do not allow this (RBAC)"
        if self.status == 401:
            return "the cluster refused the platform's credentials"
        if self.status == 409:
            return "a conflicting change on the cluster; it is retried"
        if self.status in (400, 422):
            return "the cluster refused the service's configuration"
        return "the cluster could not be reached; it is retried"


def _message(error: httpx2.HTTPStatusError) -> str:
    if isinstance(error, ApiError) and error.status.message:
        return error.status.message
    return error.response.reason_phrase or "error"


async def _call(what: str, call: Callable[[], Awaitable[T]]) -> T:
    attempt = 0
    while True:
        try:
            return await call()
        except httpx2.HTTPStatusError as error:  # ApiError too (an answer in the API's Status shape)
            status, retry_after, message = error.response.status_code, error.response.headers.get("Retry-After"), \
                _message(error)
        except httpx2.TransportError as error:  # a timeout, a refused or dropped connection
            status, retry_after, message = None, None, type(error).__name__
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as error:
            # lightkube decodes strictly; an error without a Content-Type is a KeyError in it.
            raise ClusterCallFailed(what, None, f"not a Kubernetes API answer ({type(error).__name__})") from None
        delay = retry_delay(attempt, status, retry_after)
        if delay is None:
            raise ClusterCallFailed(what, status, message) from None
        log.info("kubernetes.retrying", what=what, status=status, delay_seconds=delay)
        await asyncio.sleep(delay)  # the backoff itself, not a condition
        attempt += 1


async def _dicts(objects: Any) -> list[dict[str, Any]]:
    return [obj.to_dict() async for obj in objects]


async def _lines(stream: Any) -> list[str]:
    return [line async for line in stream]


def _labelled(obj: Mapping[str, Any], key: str, value: str) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(key) == value


class KubernetesDriver:
    def __init__(self, directory: ClusterDirectory) -> None:
        self._directory = directory

    # --- the protocol ---------------------------------------------------------------------------------------

    async def apply(self, desired: AccountState) -> Observed:
        target = await self._directory.of_account(desired.account_id)
        if target is None:
            return Observed({i.id: ObservedInstance("stopped" if not i.run else "failed", NOT_PLACED)
                             for i in desired.instances})
        client = target.api.client
        namespace = namespace_name(desired.account_id)
        held = await self._held(client, desired.account_id)
        found = [Found.of(kind, obj) for kind, objects in held.items() for obj in objects]
        plan = plan_changes(desired, render_account(desired, target.settings, include_secrets=False),
                            wanted_secrets(desired), found)
        observed = Observed()
        if plan.delete_namespace:
            await self._delete(client, "Namespace", namespace, None)
            observed.writes += 1
            return observed
        failed: dict[str, ObservedInstance] = {}
        try:
            secrets = self._secrets(desired, target.settings, plan.secrets, failed)
            for manifest in sorted([*plan.apply, *secrets], key=apply_order):
                instance = manifest["metadata"]["labels"].get(INSTANCE_LABEL)
                if instance in failed:
                    continue
                try:
                    await self._apply(client, manifest)
                except ClusterCallFailed as error:
                    if instance is None:
                        raise  # an account-level object: nothing of the account converges without it
                    failed[instance] = ObservedInstance("failed", error.reason, error=str(error))
                else:
                    observed.writes += 1
            for gone in plan.delete:
                try:
                    await self._delete(client, gone.kind, gone.name, namespace)
                except ClusterCallFailed as error:
                    if gone.instance is None:
                        raise
                    failed[gone.instance] = ObservedInstance("failed", error.reason, error=str(error))
                else:
                    observed.writes += 1
            if observed.writes:  # read the workloads back as the cluster has them now
                for kind in WORKLOAD_KINDS:
                    held[kind] = await self._list(client, kind, namespace, account_labels(desired.account_id))
            pods = await self._list_pods(client, namespace, account_labels(desired.account_id))
        except ClusterCallFailed as error:
            log.warning("kubernetes.apply_failed", account_id=str(desired.account_id), cluster=target.name,
                        error=str(error))
            observed.instances = {i.id: ObservedInstance("failed", error.reason, error=str(error))
                                  for i in desired.instances}
            return observed
        workloads = [*held["Deployment"], *held["StatefulSet"]]
        for instance in desired.instances:
            observed.instances[instance.id] = failed.get(str(instance.id)) or _status(instance, workloads, pods)
        return observed

    async def observe(self, account_id: uuid.UUID) -> Observed:
        """What the cluster runs for the account, without its desired state: an instance runs when its workloads
        want replicas, and is throttled when the account's LimitRange is the throttled one."""
        target = await self._directory.of_account(account_id)
        if target is None:
            return Observed()
        client = target.api.client
        namespace = namespace_name(account_id)
        held = await self._held(client, account_id)
        pods = await self._list_pods(client, namespace, account_labels(account_id))
        throttled = any("maxLimitRequestRatio" in limit for limits in held["LimitRange"]
                        for limit in (limits.get("spec") or {}).get("limits") or [])
        workloads = [*held["Deployment"], *held["StatefulSet"]]
        observed = Observed()
        labelled = {((w.get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL) for w in workloads}
        for instance in sorted(label for label in labelled if label is not None):
            mine = [w for w in workloads if _labelled(w, INSTANCE_LABEL, instance)]
            observed.instances[uuid.UUID(instance)] = instance_status(
                run=any((w.get("spec") or {}).get("replicas") for w in mine), throttled=throttled, problem=None,
                workloads=mine, pods=[p for p in pods if _labelled(p, INSTANCE_LABEL, instance)])
        return observed

    async def remove_instance(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> None:
        """Every object of the instance, its PersistentVolumeClaims and Secrets included; the namespace too when
        no other instance has anything left in it (an account with no instance has no namespace)."""
        target = await self._directory.of_account(account_id)
        if target is None:
            return
        client = target.api.client
        namespace = namespace_name(account_id)
        mine = {**account_labels(account_id), INSTANCE_LABEL: str(instance_id)}
        for kind in reversed(INSTANCE_KINDS):
            for obj in await self._list(client, kind, namespace, mine):
                await self._delete(client, kind, obj["metadata"]["name"], namespace)
        others = {**account_labels(account_id), INSTANCE_LABEL: None}  # None: the label exists
        for kind in INSTANCE_KINDS:
            if await self._list(client, kind, namespace, others):
                return
        await self._delete(client, "Namespace", namespace, None)

    async def destroy(self, account_id: uuid.UUID) -> None:
        """The namespace of an account that no longer exists, on every cluster (its placement went with it)."""
        for target in await self._directory.every_cluster():
            await self._delete(target.api.client, "Namespace", namespace_name(account_id), None)

    async def logs(self, instance_id: uuid.UUID, tail: int) -> list[str]:
        """The last `tail` lines of the instance's newest app pod; none when it has no started pod."""
        placed = await self._directory.of_instance(instance_id)
        if placed is None:
            return []
        account_id, target = placed
        client, namespace = target.api.client, namespace_name(account_id)
        try:
            pods = await self._list_pods(client, namespace, {INSTANCE_LABEL: str(instance_id), COMPONENT_LABEL: APP})
            if not pods:
                return []
            newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
            name = newest["metadata"]["name"]
            return await _call(f"read the log of pod {name}", lambda: _lines(client.log(
                name, namespace=namespace, container=APP, tail_lines=tail, newlines=False)))
        except ClusterCallFailed as error:
            if error.status in (400, 404):  # its container has not started yet, or the pod just went
                return []
            raise ClusterUnreachable(f"The cluster {target.name} could not give the logs: {error.reason}") from None

    async def restart(self, instance_id: uuid.UUID) -> None:
        """A rollout restart, as kubectl does it: the pod template's `restartedAt` annotation, patched under a
        merge patch (not our apply), so our later applies leave it alone and the Deployment replaces its pods."""
        placed = await self._directory.of_instance(instance_id)
        if placed is None:
            return
        account_id, target = placed
        client, namespace = target.api.client, namespace_name(account_id)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        apps = {INSTANCE_LABEL: str(instance_id), COMPONENT_LABEL: APP}
        for deployment in await self._list(client, "Deployment", namespace, apps):
            name = deployment["metadata"]["name"]
            await _call(f"restart Deployment {name}", functools.partial(
                client.patch, Deployment, name, patch, namespace=namespace, patch_type=PatchType.MERGE))

    async def close(self) -> None:
        await self._directory.close()

    # --- calls ------------------------------------------------------------------------------------------------

    async def _held(self, client: AsyncClient, account_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
        """Every object of ours the cluster holds for the account, by kind."""
        labels = account_labels(account_id)
        namespace = namespace_name(account_id)
        return {kind: await self._list(client, kind, None if kind == "Namespace" else namespace, labels)
                for kind in APPLY_ORDER}

    @staticmethod
    async def _list(client: AsyncClient, kind: str, namespace: str | None,
                    labels: Mapping[str, str | None]) -> list[dict[str, Any]]:
        resource = RESOURCES[kind]
        return await _call(f"list {kind}", lambda: _dicts(client.list(
            resource, namespace=namespace, labels=dict(labels), chunk_size=LIST_CHUNK)))

    @staticmethod
    async def _list_pods(client: AsyncClient, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return await _call("list Pod", lambda: _dicts(client.list(
            Pod, namespace=namespace, labels=dict(labels), chunk_size=LIST_CHUNK)))

    @staticmethod
    async def _apply(client: AsyncClient, manifest: Manifest) -> None:
        kind, metadata = manifest["kind"], manifest["metadata"]
        await _call(f"apply {kind} {metadata['name']}", lambda: client.patch(
            RESOURCES[kind], metadata["name"], manifest, namespace=metadata.get("namespace"),
            patch_type=PatchType.APPLY, field_manager=FIELD_MANAGER, force=True))

    @staticmethod
    async def _delete(client: AsyncClient, kind: str, name: str, namespace: str | None) -> None:
        try:
            await _call(f"delete {kind} {name}", lambda: client.delete(RESOURCES[kind], name, namespace=namespace))
        except ClusterCallFailed as error:
            if error.status != 404:  # gone already: what we wanted
                raise

    @staticmethod
    def _secrets(desired: AccountState, cluster: ClusterSettings, keys: Sequence[SecretKey],
                 failed: dict[str, ObservedInstance]) -> list[Manifest]:
        """The Secrets to write, rendered (their values decrypted) only now; an instance whose values cannot be
        read is failed and applies nothing."""
        wanted = wanted_secrets(desired)
        by_id = {str(i.id): i for i in desired.instances}
        secrets = []
        for instance_id in dict.fromkeys(instance_id for instance_id, _ in keys):
            try:
                objects = render_instance(desired.account_id, by_id[instance_id], cluster)
            except ValueError as error:  # a generated value is missing or unreadable: not until facts change
                failed[instance_id] = ObservedInstance("failed", "its configuration is incomplete", error=str(error))
                continue
            for manifest in objects:
                key = (instance_id, manifest["metadata"]["labels"][COMPONENT_LABEL])
                if manifest["kind"] == "Secret" and key in keys:
                    secrets.append(stamped(manifest, wanted[key]))
        return secrets


def _status(instance: DesiredInstance, workloads: Sequence[Mapping[str, Any]],
            pods: Sequence[Mapping[str, Any]]) -> ObservedInstance:
    mine = str(instance.id)
    return instance_status(run=instance.run and not instance.deleted, throttled=instance.throttled,
                           problem=instance.problem, workloads=[w for w in workloads if _labelled(w, INSTANCE_LABEL, mine)],
                           pods=[p for p in pods if _labelled(p, INSTANCE_LABEL, mine)])
