"""Accepting a kubeconfig: only what connects without touching our host.

A kubeconfig can name commands to run (`exec`, `auth-provider` plugins) and files to read (`certificate-authority`,
`client-certificate`, `client-key`, `tokenFile`): on the control plane either would run or read whatever its author
chose. We accept only inline credentials (a bearer `token`, or `client-certificate-data` with `client-key-data`),
an `https://` server, and the cluster's CA inline (`certificate-authority-data`) or, knowingly,
`insecure-skip-tls-verify`. One context is used: `current-context`, or the only one there is. What is stored (encrypted)
is that context alone, with its cluster and user: never the other contexts' credentials.

Pure: no I/O. Refusals are 422 `invalid_kubeconfig` naming the field (`details.field`), never echoing its value.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError

from jushostit.kit.errors import AppError

# Why each field we refuse is refused, in the words an operator needs.
REFUSED_CLUSTER_FIELDS = {
    "certificate-authority": "is a file path, which would be read on our host; give certificate-authority-data",
    "proxy-url": "is not supported: the cluster's API must be reachable directly",
    "tls-server-name": "is not supported: the server URL's host must match its certificate",
}
REFUSED_USER_FIELDS = {
    "exec": "runs a command on our host; use a bearer token or client-certificate-data/client-key-data",
    "auth-provider": "runs an authentication plugin on our host; use a bearer token or client certificate data",
    "tokenFile": "is a file path, which would be read on our host; give the token itself",
    "client-certificate": "is a file path, which would be read on our host; give client-certificate-data",
    "client-key": "is a file path, which would be read on our host; give client-key-data",
    "username": "basic authentication was removed from Kubernetes (1.19); use a token or a client certificate",
    "password": "basic authentication was removed from Kubernetes (1.19); use a token or a client certificate",
    "as": "impersonation is not supported", "as-uid": "impersonation is not supported",
    "as-groups": "impersonation is not supported", "as-user-extra": "impersonation is not supported",
}
CLUSTER_FIELDS = {"server", "certificate-authority-data", "insecure-skip-tls-verify", "extensions"}
USER_FIELDS = {"token", "client-certificate-data", "client-key-data", "extensions"}
CONTEXT_FIELDS = {"cluster", "user", "namespace", "extensions"}


class KubeconfigRefused(AppError):
    status_code = 422
    code = "invalid_kubeconfig"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"The kubeconfig's {field} {problem}", details={"field": field})


@dataclass(frozen=True)
class AcceptedKubeconfig:
    """The one context we use, with its cluster and user, as a kubeconfig of its own."""

    document: dict[str, Any]
    context: str
    server: str
    tls_verified: bool

    def serialized(self) -> str:
        """What is stored, encrypted."""
        return json.dumps(self.document, sort_keys=True)

    def config(self) -> SingleConfig:
        single = KubeConfig.from_dict(self.document).get()
        assert single is not None  # current-context is always set here
        return single


def _named(entries: Any, kind: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """`clusters`, `contexts` or `users` by name: (its index, its body)."""
    if entries is None and kind == "users":
        return {}
    if not isinstance(entries, list):
        raise KubeconfigRefused(kind, "must be a list")
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    body_key = kind.removesuffix("s")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise KubeconfigRefused(f"{kind}[{index}]", "must have a name")
        body = entry.get(body_key)
        if not isinstance(body, dict):
            raise KubeconfigRefused(f"{kind}[{index}].{body_key}", "must be a mapping")
        if entry["name"] in found:
            raise KubeconfigRefused(f"{kind}[{index}].name", f"{entry['name']!r} is given twice")
        found[entry["name"]] = (index, body)
    return found


def _only(body: dict[str, Any], where: str, allowed: set[str], refused: dict[str, str]) -> None:
    for key in body:
        if key in refused:
            raise KubeconfigRefused(f"{where}.{key}", refused[key])
        if key not in allowed:
            raise KubeconfigRefused(f"{where}.{key}", "is not supported")


def _decoded(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise KubeconfigRefused(where, "must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigRefused(where, "is not valid base64") from None


def _certificates(value: Any, where: str) -> None:
    try:
        x509.load_pem_x509_certificates(_decoded(value, where))
    except ValueError:
        raise KubeconfigRefused(where, "is not a PEM certificate") from None


def _choose_context(document: dict[str, Any], contexts: dict[str, tuple[int, dict[str, Any]]]) -> str:
    current = document.get("current-context")
    if current:
        if current not in contexts:
            raise KubeconfigRefused("current-context", f"names {str(current)[:100]!r}, which is not among the contexts")
        return str(current)
    if len(contexts) != 1:
        raise KubeconfigRefused(
            "current-context", f"is not set and there are {len(contexts)} contexts: set it to the one to use"
        )
    return next(iter(contexts))


def _checked_cluster(body: dict[str, Any], where: str) -> tuple[str, bool]:
    _only(body, where, CLUSTER_FIELDS, REFUSED_CLUSTER_FIELDS)
    server = body.get("server")
    parts = urlsplit(server) if isinstance(server, str) else None
    if not isinstance(server, str) or parts is None or parts.scheme != "https" or not parts.hostname:
        raise KubeconfigRefused(f"{where}.server", "must be an https:// URL (the API server's address)")
    insecure = body.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise KubeconfigRefused(f"{where}.insecure-skip-tls-verify", "must be true or false")
    if "certificate-authority-data" in body:
        if insecure:
            raise KubeconfigRefused(
                f"{where}.insecure-skip-tls-verify", "cannot be set with certificate-authority-data: give one"
            )
        _certificates(body["certificate-authority-data"], f"{where}.certificate-authority-data")
    return server, not insecure


def _checked_user(body: dict[str, Any], where: str) -> None:
    _only(body, where, USER_FIELDS, REFUSED_USER_FIELDS)
    if "token" in body:
        if not isinstance(body["token"], str) or not body["token"]:
            raise KubeconfigRefused(f"{where}.token", "must be a non-empty string")
        return
    if not all(key in body for key in ("client-certificate-data", "client-key-data")):
        raise KubeconfigRefused(where, "needs a token, or client-certificate-data and client-key-data")
    _certificates(body["client-certificate-data"], f"{where}.client-certificate-data")
    try:
        serialization.load_pem_private_key(_decoded(body["client-key-data"], f"{where}.client-key-data"), None)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # TypeError: the key is encrypted
        raise KubeconfigRefused(f"{where}.client-key-data", "is not an unencrypted PEM private key") from None


def accept_kubeconfig(text: str) -> AcceptedKubeconfig:
    """The kubeconfig's context to use, checked; KubeconfigRefused (422) naming the first field we cannot accept."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        raise KubeconfigRefused("document", "is not YAML (or JSON)") from None
    if not isinstance(document, dict):
        raise KubeconfigRefused("document", "must be a mapping with clusters, contexts and users")
    contexts = _named(document.get("contexts"), "contexts")
    clusters = _named(document.get("clusters"), "clusters")
    users = _named(document.get("users"), "users")
    name = _choose_context(document, contexts)
    context_index, context = contexts[name]
    where = f"contexts[{context_index}].context"
    _only(context, where, CONTEXT_FIELDS, {})
    if context.get("cluster") not in clusters:
        raise KubeconfigRefused(f"{where}.cluster", "must name one of the clusters")
    if context.get("user") not in users:
        raise KubeconfigRefused(f"{where}.user", "must name one of the users (the credentials to connect with)")
    cluster_index, cluster = clusters[context["cluster"]]
    server, tls_verified = _checked_cluster(cluster, f"clusters[{cluster_index}].cluster")
    user_index, user = users[context["user"]]
    _checked_user(user, f"users[{user_index}].user")
    minimal = {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "contexts": [{"name": name, "context": {"cluster": context["cluster"], "user": context["user"]}}],
        "clusters": [{"name": context["cluster"], "cluster": cluster}],
        "users": [{"name": context["user"], "user": user}],
    }
    try:
        KubeConfig.from_dict(minimal).get()
    except (ConfigError, ValueError, TypeError) as error:  # msgspec's ValidationError is a ValueError
        raise KubeconfigRefused("document", f"cannot be read: {str(error)[:200]}") from None
    return AcceptedKubeconfig(minimal, name, server, tls_verified)
