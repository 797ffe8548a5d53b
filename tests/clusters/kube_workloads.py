"""The Kubernetes API stand-in (tests/clusters/kube_stand_in.py) grown into a cluster that keeps what is applied
to it and runs its workloads, recording every request it is sent, on the API's wire format:

- server-side apply: `PATCH .../{plural}/{name}` with `Content-Type: application/apply-patch+yaml` and a
  `fieldManager` (422 without one, 415 with another content type); 201 when it creates the object, 200 when it
  updates it; `metadata.generation` moves when the spec changes; a namespaced object in a namespace that does not
  exist is 404, as the API answers;
- merge patches (`application/merge-patch+json`), kept across later applies as another manager's fields are;
- lists with `labelSelector` (`k=v`, `k!=v`, `k`, `!k`), gets, deletes (a namespace takes its objects with it, a
  workload its pods), 404 for what does not exist;
- workloads roll out when the test says so (`settle`), or at once with `ready = True`: until then a Deployment's
  `observedGeneration` lags its generation, as during a rollout. Settled, each has its pods, Running and Ready;
  `trouble` puts a workload's pods in a waiting or OOMKilled state;
- pod logs (`GET .../pods/{name}/log`, text/plain, `tailLines`, 400 while the container waits to start);
- answers scripted in advance (`script`): a 409, a 403, a 429 with Retry-After, a 503, ... consumed in order; and
  answers that come too late (`stall`).

The test and the server's thread share it, so every access holds its lock.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tests.clusters.kube_stand_in import TOKEN, KubeStandIn, status

# plural → (the API's path prefix, kind, namespaced)
RESOURCES = {
    "namespaces": ("/api/v1", "Namespace", False),
    "serviceaccounts": ("/api/v1", "ServiceAccount", True),
    "resourcequotas": ("/api/v1", "ResourceQuota", True),
    "limitranges": ("/api/v1", "LimitRange", True),
    "secrets": ("/api/v1", "Secret", True),
    "persistentvolumeclaims": ("/api/v1", "PersistentVolumeClaim", True),
    "services": ("/api/v1", "Service", True),
    "pods": ("/api/v1", "Pod", True),
    "networkpolicies": ("/apis/networking.k8s.io/v1", "NetworkPolicy", True),
    "ingresses": ("/apis/networking.k8s.io/v1", "Ingress", True),
    "deployments": ("/apis/apps/v1", "Deployment", True),
    "statefulsets": ("/apis/apps/v1", "StatefulSet", True),
}
PLURALS = {kind: plural for plural, (_, kind, _) in RESOURCES.items()}
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
CREATED_AT = "2026-11-29T09:00:00Z"

Key = tuple[str, str | None, str]  # (plural, namespace, name)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any


@dataclass
class Scripted:
    method: str
    path: str
    answer: Response | None  # None: the normal answer, after `delay`
    times: int = 1
    delay: float = 0.0


def path_of(kind: str, namespace: str | None, name: str | None = None) -> str:
    plural = PLURALS[kind]
    prefix = RESOURCES[plural][0]
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


def _parse(path: str) -> tuple[str, str | None, str | None, str | None] | None:
    """(plural, namespace, name, subresource) of a resource path we keep, or None."""
    for prefix in ("/api/v1/", "/apis/networking.k8s.io/v1/", "/apis/apps/v1/"):
        if path.startswith(prefix):
            parts = path[len(prefix):].strip("/").split("/")
            break
    else:
        return None
    namespace = None
    if parts[0] == "namespaces" and len(parts) >= 3:
        namespace, parts = parts[1], parts[2:]
    plural = parts[0]
    if plural not in RESOURCES or RESOURCES[plural][0] != prefix.rstrip("/"):
        return None
    name = parts[1] if len(parts) > 1 else None
    subresource = parts[2] if len(parts) > 2 else None
    return plural, namespace, name, subresource


def selects(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _merged(base: Any, patch: Any) -> Any:
    """RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merged(result.get(key), value)
    return result


@dataclass
class WorkloadStandIn(KubeStandIn):
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    scripted: list[Scripted] = field(default_factory=list)
    ready: bool = False  # workloads roll out as soon as they are applied
    pod_logs: dict[str, list[str]] = field(default_factory=dict)
    _merge_patches: dict[Key, dict[str, Any]] = field(default_factory=dict)
    _pod_owners: dict[Key, str] = field(default_factory=dict)  # a pod → its workload's name
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- what the test says and reads ----------------------------------------------------------------------------

    def script(self, method: str, path: str, code: int, reason: str, message: str, *, times: int = 1,
               headers: dict[str, str] | None = None, causes: list[dict[str, str]] | None = None) -> None:
        """The next `times` requests `method path` are answered with this Status."""
        answer = status(code, reason, message)
        if causes:
            answer = JSONResponse({**json.loads(answer.body), "details": {"causes": causes}}, status_code=code)
        answer.headers.update(headers or {})
        with self._lock:
            self.scripted.append(Scripted(method, path, answer, times))

    def stall(self, method: str, path: str, seconds: float, *, times: int = 1) -> None:
        """The next `times` requests `method path` are answered only after `seconds` (a client gives up first)."""
        with self._lock:
            self.scripted.append(Scripted(method, path, None, times, seconds))

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.objects.get((PLURALS[kind], namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def of_kind(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(obj) for (plural, ns, _), obj in sorted(self.objects.items())
                    if plural == PLURALS[kind] and (namespace is None or ns == namespace)]

    def put(self, obj: dict[str, Any]) -> None:
        """An object someone else made (kubectl, another controller), as it is."""
        metadata = obj["metadata"]
        with self._lock:
            stored = self._stored(obj, None)
            stored["status"] = copy.deepcopy(obj.get("status", stored["status"]))
            self.objects[(PLURALS[obj["kind"]], metadata.get("namespace"), metadata["name"])] = stored

    def requests(self, method: str | None = None) -> list[Call]:
        """Calls to the resources we keep (not the registration's reviews, nodes or version)."""
        with self._lock:
            return [c for c in self.calls if _parse(c.path) is not None and (method is None or c.method == method)]

    def forget_requests(self) -> None:
        with self._lock:
            self.calls.clear()

    def settle(self) -> None:
        """Every workload rolls out its current spec: its status catches up and its pods run, ready."""
        with self._lock:
            for key, obj in list(self.objects.items()):
                if obj["kind"] in ("Deployment", "StatefulSet"):
                    self._roll_out(key, obj)

    def trouble(self, namespace: str, workload: str, *, waiting: str | None = None,
                last_terminated: str | None = None) -> None:
        """The workload's pods are not ready: their container waits with `waiting` (CrashLoopBackOff, ...),
        after a last run that ended with `last_terminated` (OOMKilled, Error)."""
        with self._lock:
            for key, pod in self.objects.items():
                if key[1] != namespace or self._pod_owners.get(key) != workload:
                    continue
                for container in pod["status"]["containerStatuses"]:
                    container["ready"] = False
                    container["restartCount"] = 5
                    container["state"] = {"waiting": {"reason": waiting, "message": f"{waiting} for the test"}} \
                        if waiting else {"running": {"startedAt": CREATED_AT}}
                    if last_terminated:
                        container["lastState"] = {"terminated": {"reason": last_terminated, "exitCode": 137,
                                                                 "startedAt": CREATED_AT, "finishedAt": CREATED_AT}}
                pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
            deployment = self.objects.get(("deployments", namespace, workload))
            if deployment is not None:
                deployment["status"]["availableReplicas"] = 0
                deployment["status"]["readyReplicas"] = 0

    # --- the API ---------------------------------------------------------------------------------------------------

    async def answer(self, request: Request) -> Response:
        raw = await request.body()
        content_type = request.headers.get("content-type")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        path, method = request.url.path, request.method
        with self._lock:
            self.calls.append(Call(method, path, dict(request.query_params), content_type, body))
            stalled = next((s for s in self.scripted if s.answer is None and s.method == method and s.path == path
                            and s.times > 0), None)
            if stalled is not None:
                stalled.times -= 1
        if stalled is not None:
            await asyncio.sleep(stalled.delay)  # an answer that comes too late, not a condition awaited
        with self._lock:
            parsed = _parse(path)
            if (self.outage is not None or request.headers.get("authorization") != f"Bearer {TOKEN}"
                    or parsed is None or (parsed[0] == "pods" and parsed[1] is None)):
                return await super().answer(request)  # errors, /version, reviews, nodes, every namespace's pods
            for scripted in self.scripted:
                if scripted.answer is not None and scripted.method == method and scripted.path == path \
                        and scripted.times > 0:
                    scripted.times -= 1
                    return scripted.answer
            plural, namespace, name, subresource = parsed
            query = dict(request.query_params)
            if name is None:
                if method == "GET":
                    return self._list_kept(plural, namespace, query.get("labelSelector", ""))
                return status(405, "MethodNotAllowed", f"{method} on a collection is not served here")
            key = (plural, namespace, name)
            if subresource == "log" and method == "GET":
                return self._log(key, query)
            if subresource is not None:
                return status(404, "NotFound", "the server could not find the requested resource")
            if method == "PATCH" and content_type == APPLY:
                return self._apply(key, body, query)
            if method == "PATCH" and content_type == MERGE:
                return self._merge(key, body)
            if method == "PATCH":
                return status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: "
                                                           f"{content_type}")
            if method == "GET":
                found = self.objects.get(key)
                return JSONResponse(found) if found else status(404, "NotFound", f'{plural} "{name}" not found')
            if method == "DELETE":
                return self._delete(key)
            return status(405, "MethodNotAllowed", f"{method} is not served here")

    def _list_kept(self, plural: str, namespace: str | None, selector: str) -> JSONResponse:
        prefix, kind, _ = RESOURCES[plural]
        items = [obj for (p, ns, _), obj in sorted(self.objects.items())
                 if p == plural and (namespace is None or ns == namespace)
                 and selects(selector, obj["metadata"].get("labels") or {})]
        return JSONResponse({"kind": f"{kind}List", "apiVersion": prefix.removeprefix("/api/").removeprefix("/apis/"),
                             "metadata": {"resourceVersion": str(next(self._versions))}, "items": items})

    def _stored(self, body: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        metadata = obj["metadata"]
        generation = 1
        if existing is not None:
            generation = existing["metadata"]["generation"]
            if existing.get("spec") != obj.get("spec"):
                generation += 1
        metadata.update(uid=(existing or {}).get("metadata", {}).get("uid") or f"uid-{metadata['name']}",
                        creationTimestamp=CREATED_AT, resourceVersion=str(next(self._versions)),
                        generation=generation)
        # A new object's status as the API server makes it (a StatefulSet's `replicas` is never left out).
        obj["status"] = (existing or {}).get("status") or {
            "Namespace": {"phase": "Active"}, "StatefulSet": {"replicas": 0, "availableReplicas": 0},
        }.get(obj["kind"], {})
        return obj

    def _apply(self, key: Key, body: Any, query: dict[str, str]) -> JSONResponse:
        plural, namespace, name = key
        if not query.get("fieldManager"):
            return status(422, "Invalid", "PATCH /apply requires a fieldManager")
        if not isinstance(body, dict) or body.get("kind") != RESOURCES[plural][1] \
                or body.get("metadata", {}).get("name") != name:
            return status(400, "BadRequest", "the object does not match the path")
        if namespace is not None and ("namespaces", None, namespace) not in self.objects:
            return status(404, "NotFound", f'namespaces "{namespace}" not found')
        existing = self.objects.get(key)
        applied = _merged(body, self._merge_patches.get(key, {}))  # another manager's fields stay
        obj = self._stored(applied, existing)
        self.objects[key] = obj
        if self.ready and obj["kind"] in ("Deployment", "StatefulSet"):
            self._roll_out(key, obj)
        return JSONResponse(obj, status_code=200 if existing else 201)

    def _merge(self, key: Key, patch: Any) -> JSONResponse:
        existing = self.objects.get(key)
        if existing is None:
            return status(404, "NotFound", f'{key[0]} "{key[2]}" not found')
        self._merge_patches[key] = _merged(self._merge_patches.get(key, {}), patch)
        merged = _merged({k: v for k, v in existing.items() if k != "status"}, patch)
        self.objects[key] = self._stored(merged, existing)
        return JSONResponse(self.objects[key])

    def _delete(self, key: Key) -> JSONResponse:
        plural, namespace, name = key
        if key not in self.objects:
            return status(404, "NotFound", f'{plural} "{name}" not found')
        del self.objects[key]
        self._merge_patches.pop(key, None)
        if plural == "namespaces":  # everything in it goes with it
            self.objects = {k: v for k, v in self.objects.items() if k[1] != name}
            self._pod_owners = {k: v for k, v in self._pod_owners.items() if k[1] != name}
        if plural in ("deployments", "statefulsets"):  # the garbage collector takes its pods
            self._remove_pods(namespace, name)
        return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                             "details": {"name": name, "kind": plural}})

    def _log(self, key: Key, query: dict[str, str]) -> Response:
        _, namespace, name = key
        pod = self.objects.get(("pods", namespace, name))
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        if pod["status"].get("phase") != "Running":
            return status(400, "BadRequest", f'container "app" in pod "{name}" is waiting to start: ContainerCreating')
        lines = self.pod_logs.get(name, [])
        tail = int(query.get("tailLines") or len(lines) or 1)
        return PlainTextResponse("".join(f"{line}\n" for line in lines[-tail:]))

    # --- the controllers ---------------------------------------------------------------------------------------

    def _remove_pods(self, namespace: str | None, workload: str) -> None:
        for key in [k for k, owner in self._pod_owners.items() if k[1] == namespace and owner == workload]:
            del self._pod_owners[key]
            self.objects.pop(key, None)

    def _roll_out(self, key: Key, obj: dict[str, Any]) -> None:
        _, namespace, name = key
        replicas = obj["spec"].get("replicas", 1)
        generation = obj["metadata"]["generation"]
        if obj["kind"] == "Deployment":
            obj["status"] = {"observedGeneration": generation, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
            if replicas:
                obj["status"].update(replicas=replicas, updatedReplicas=replicas, readyReplicas=replicas,
                                     availableReplicas=replicas)
        else:
            revision = f"{name}-rev{generation}"
            obj["status"] = {"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                             "currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
                             "currentRevision": revision, "updateRevision": revision}
        self._remove_pods(namespace, name)
        template = obj["spec"]["template"]
        for index in range(replicas):
            pod_name = f"{name}-{generation}x{index}" if obj["kind"] == "Deployment" else f"{name}-{index}"
            self._pod_owners[("pods", namespace, pod_name)] = name
            self.objects[("pods", namespace, pod_name)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": namespace, "uid": f"uid-{pod_name}",
                             "creationTimestamp": CREATED_AT, "labels": dict(template["metadata"]["labels"])},
                "spec": copy.deepcopy(template["spec"]),
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                           "containerStatuses": [
                               {"name": c["name"], "image": c["image"], "imageID": f"{c['image']}@sha256:0",
                                "ready": True, "restartCount": 0, "started": True,
                                "state": {"running": {"startedAt": CREATED_AT}}}
                               for c in template["spec"]["containers"]]},
            }
