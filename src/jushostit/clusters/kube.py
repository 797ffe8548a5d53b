"""A cluster's Kubernetes API, through lightkube's async client (on httpx2), from a kubeconfig we accepted.

Every failure to talk to it becomes one of our errors, in the contract's shape: 502 `cluster_unreachable` (no
connection, no answer in time), `cluster_tls_failed` (its certificate is not the one the kubeconfig's CA signed)
or `cluster_bad_answer` (not a Kubernetes API's answer); 422 `cluster_credentials_refused` (401) or
`cluster_permissions_missing` (403, or a permission we need that a SelfSubjectAccessReview denies). The
environment's proxies and CA bundle are not used (`trust_env=False`): the kubeconfig says how to reach the cluster.
lightkube never retries; neither do we here (the periodic observation is the retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx2
import msgspec
from lightkube import ApiError, AsyncClient
from lightkube.config import client_adapter
from lightkube.config.client_adapter import ConnectionParams
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import Node, Pod

from jushostit.clusters.kubeconfig import AcceptedKubeconfig, KubeconfigRefused
from jushostit.kit.errors import AppError

FIELD_MANAGER = "jushostit"
LIST_CHUNK = 500
CONCURRENT_REVIEWS = 8
BODY_SHOWN = 200  # characters of a proxied service's error answer quoted in our error


class ClusterUnreachable(AppError):
    """We could not hold a conversation with the cluster's API."""

    status_code = 502
    code = "cluster_unreachable"


class ClusterRefused(AppError):
    """The cluster answered, and refused what the kubeconfig's credentials may do."""

    status_code = 422
    code = "cluster_permissions_missing"


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    subresource: str = ""

    @property
    def label(self) -> str:
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {what}" + (f"/{self.subresource}" if self.subresource else "")


# What JusHostIt does on a cluster: a namespace per account with its quota, limits, policies and service account,
# workloads applied server-side (PATCH, which needs `create` for an object that does not exist yet) and pruned,
# nodes and pods observed, probe pods and their logs read by `clusters verify`. Namespaced resources are checked in
# every namespace (`namespace: ""`): each account gets a namespace of its own, made later.
APPLIED = (
    ("", "namespaces"), ("", "resourcequotas"), ("", "limitranges"), ("networking.k8s.io", "networkpolicies"),
    ("", "serviceaccounts"), ("", "secrets"), ("", "persistentvolumeclaims"), ("", "services"),
    ("apps", "deployments"), ("apps", "statefulsets"), ("networking.k8s.io", "ingresses"), ("", "pods"),
)
REQUIRED_PERMISSIONS = (
    *(Permission(verb, resource, group) for group, resource in APPLIED for verb in ("create", "patch", "delete", "list")),
    Permission("list", "nodes"),
    Permission("get", "pods", subresource="log"),
)


def _tls_failure(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _refusal(status: int, server: str) -> AppError:
    if status == 401:
        return ClusterRefused(
            f"The cluster at {server} refused the kubeconfig's credentials (401)", code="cluster_credentials_refused"
        )
    if status == 403:
        return ClusterRefused(f"The cluster at {server} forbids what we asked of it (403)")
    return ClusterUnreachable(f"The cluster at {server} answered {status}", code="cluster_bad_answer",
                              details={"status": status})


@contextlib.asynccontextmanager
async def _answers(server: str) -> AsyncIterator[None]:
    """The cluster's failures, as our errors."""
    try:
        yield
    except ApiError as error:
        raise _refusal(error.status.code or error.response.status_code, server) from None
    except httpx2.HTTPStatusError as error:
        raise _refusal(error.response.status_code, server) from None
    except httpx2.TimeoutException:
        raise ClusterUnreachable(f"The cluster at {server} did not answer in time") from None
    except httpx2.TransportError as error:
        if _tls_failure(error):
            raise ClusterUnreachable(
                f"The cluster at {server} did not present a certificate its CA (certificate-authority-data) signed",
                code="cluster_tls_failed",
            ) from None
        raise ClusterUnreachable(f"The cluster at {server} cannot be reached") from None
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError, ValueError, TypeError):
        # lightkube decodes strictly; an error answer without a Content-Type is a KeyError in it.
        raise ClusterUnreachable(
            f"The cluster at {server} did not answer as a Kubernetes API does", code="cluster_bad_answer"
        ) from None


class ClusterApi:
    def __init__(self, kubeconfig: AcceptedKubeconfig, client: AsyncClient, raw: httpx2.AsyncClient) -> None:
        self.server = kubeconfig.server
        self.client = client
        self._raw = raw

    def answers(self) -> contextlib.AbstractAsyncContextManager[None]:
        return _answers(self.server)

    async def version(self) -> str:
        """/version's gitVersion, e.g. `v1.31.4+k3s1`."""
        async with self.answers():
            response = await self._raw.get("/version")
            response.raise_for_status()
            version = response.json()["gitVersion"]
        if not isinstance(version, str) or not version:
            raise ClusterUnreachable(f"The cluster at {self.server} gave no version", code="cluster_bad_answer")
        return version[:100]

    async def allowed(self, permission: Permission) -> bool:
        review = SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(resourceAttributes=ResourceAttributes(
            verb=permission.verb, group=permission.group, resource=permission.resource,
            subresource=permission.subresource or None, namespace="",
        )))
        async with self.answers():
            answer = await self.client.create(review)
            return bool(answer.status and answer.status.allowed)

    async def missing_permissions(self) -> list[str]:
        """What we need and the credentials may not do, by SelfSubjectAccessReview (the API's documented way to
        ask "may I?"; a SelfSubjectRulesReview's list may be incomplete and must not drive decisions)."""
        gate = asyncio.Semaphore(CONCURRENT_REVIEWS)

        async def denied(permission: Permission) -> str | None:
            async with gate:
                return None if await self.allowed(permission) else permission.label

        answers = await asyncio.gather(*(denied(p) for p in REQUIRED_PERMISSIONS))
        return [label for label in answers if label is not None]

    async def proxy_get(self, *, namespace: str, service: str, path: str, params: dict[str, str]) -> bytes:
        """GET `path` of a service inside the cluster through the API server's service proxy
        (`/api/v1/namespaces/{namespace}/services/{service}/proxy/{path}`, `service` as `[scheme:]name[:port]`;
        RBAC: `get services/proxy` in that namespace), so the service need not be exposed. The body as it came.
        401/403 are the API server's refusals, as everywhere here; any other answer but a 2xx is
        `cluster_bad_answer` with its status and the start of its body: the service's own error (a plain-text 400),
        or the proxy's (503 when the service has no ready endpoints, 404 when there is no such service)."""
        url = (f"/api/v1/namespaces/{quote(namespace, safe='')}/services/{quote(service, safe=':')}/proxy/"
               f"{quote(path.lstrip('/'), safe='/')}")
        async with self.answers():
            response = await self._raw.get(url, params=params)
            if response.status_code in (401, 403):
                response.raise_for_status()
            if not response.is_success:
                shown = response.text.strip()[:BODY_SHOWN]
                raise ClusterUnreachable(
                    f"The service {service} in namespace {namespace} on the cluster at {self.server} answered "
                    f"{response.status_code}: {shown}",
                    code="cluster_bad_answer", details={"status": response.status_code, "body": shown},
                )
            return response.content

    async def nodes(self) -> list[Node]:
        async with self.answers():
            return [node async for node in self.client.list(Node, chunk_size=LIST_CHUNK)]

    async def pods(self) -> list[Pod]:
        """Every namespace's pods."""
        async with self.answers():
            return [pod async for pod in self.client.list(Pod, namespace="*", chunk_size=LIST_CHUNK)]

    async def close(self) -> None:
        await self.client.close()
        await self._raw.aclose()


def open_api(kubeconfig: AcceptedKubeconfig, *, timeout: float) -> ClusterApi:
    """A client of the cluster's API, kept open until `close` (the driver keeps one per cluster)."""
    config = kubeconfig.config()
    limits = httpx2.Timeout(timeout)
    try:
        client = AsyncClient(config, timeout=limits, field_manager=FIELD_MANAGER, trust_env=False)
        raw = client_adapter.AsyncClient(config, ConnectionParams(timeout=limits, trust_env=False))
    except ssl.SSLError:
        raise KubeconfigRefused("user.client-key-data", "is not the key of client-certificate-data") from None
    return ClusterApi(kubeconfig, client, raw)


@contextlib.asynccontextmanager
async def connect(kubeconfig: AcceptedKubeconfig, *, timeout: float) -> AsyncIterator[ClusterApi]:
    api = open_api(kubeconfig, timeout=timeout)
    try:
        yield api
    finally:
        await api.close()


async def check_connection(kubeconfig: AcceptedKubeconfig, *, timeout: float) -> str:
    """The connection test of a registration: /version answers, and every permission we need is granted. The
    cluster's version; our error otherwise."""
    async with connect(kubeconfig, timeout=timeout) as api:
        version = await api.version()
        missing = await api.missing_permissions()
    if missing:
        raise ClusterRefused(
            f"The kubeconfig's credentials lack {len(missing)} permission(s) JusHostIt needs on the cluster",
            details={"missing": missing},
        )
    return version

