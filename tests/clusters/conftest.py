"""The Kubernetes API stand-in for every test of clusters, and kubeconfigs that reach it."""

from __future__ import annotations

import base64
import socket
from typing import Any

import yaml

from tests.clusters.kube_stand_in import TOKEN, KubeServer, kube, kube_server

__all__ = ["kube", "kube_server"]


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kubeconfig_for(server: KubeServer, *, token: str = TOKEN, ca_pem: bytes | None = None, insecure: bool = False,
                   url: str | None = None) -> str:
    """A kubeconfig for the stand-in, as K3s writes one: its CA inline (or `insecure-skip-tls-verify`)."""
    cluster: dict[str, Any] = {"server": url or server.base_url}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    else:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem or server.tls.ca_pem).decode()
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "clusters": [{"name": "default", "cluster": cluster}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "users": [{"name": "default", "user": {"token": token}}],
    })
