"""The README's K3s procedure says what it can prove: its RBAC grants every permission JusHostIt asks a cluster for
(the connection test's, and `clusters verify`'s reads of its probe pods) and nothing else, each of its objects
passes the Kubernetes schema (strict), and its kubeconfig, as the shell writes it, is accepted at registration."""

from __future__ import annotations

import base64
import re
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from jushostit.clusters.kube import REQUIRED_PERMISSIONS, Permission
from jushostit.clusters.kubeconfig import accept_kubeconfig
from tests.clusters.kube_stand_in import make_tls

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = README.read_text().split("## Running instances on K3s", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", SECTION, re.DOTALL)
# What `clusters verify` does beyond the connection test: it polls its probe pods by name.
VERIFY_READS = (Permission("get", "pods"), Permission("get", "nodes"))


def rbac() -> list[dict[str, Any]]:
    [block] = [text for language, text in BLOCKS if language == "yaml" and "kind: ClusterRole" in text]
    return list(yaml.safe_load_all(block))


def granted(role: dict[str, Any]) -> set[Permission]:
    found = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                name, _, subresource = resource.partition("/")
                found |= {Permission(verb, name, group, subresource) for verb in rule["verbs"]}
    return found


def test_the_cluster_role_grants_what_jushostit_asks_for_and_nothing_else() -> None:
    [role] = [obj for obj in rbac() if obj["kind"] == "ClusterRole"]

    assert granted(role) == {*REQUIRED_PERMISSIONS, *VERIFY_READS}
    assert not any("*" in rule[key] for rule in role["rules"] for key in ("apiGroups", "resources", "verbs"))


def test_the_binding_gives_that_role_to_the_service_account_whose_token_the_kubeconfig_carries() -> None:
    objects = {obj["kind"]: obj for obj in rbac()}

    account = objects["ServiceAccount"]["metadata"]
    binding = objects["ClusterRoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": objects["ClusterRole"]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", **account}]
    token = objects["Secret"]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == account["name"]
    assert token["metadata"]["namespace"] == account["namespace"] == objects["Namespace"]["metadata"]["name"]
    [shell] = [text for language, text in BLOCKS if language == "sh" and "TOKEN=" in text]
    assert f"-n {account['namespace']} get secret {token['metadata']['name']}" in shell


def test_every_object_of_the_procedure_passes_the_kubernetes_schema() -> None:
    for obj in rbac():
        kubernetes_validate.validate(obj, "1.30", strict=True)


def test_the_kubeconfig_as_the_shell_writes_it_is_accepted_with_its_ca_and_token() -> None:
    [shell] = [text for language, text in BLOCKS if language == "sh" and "KUBECONFIG" in text]
    template = shell.split("<<KUBECONFIG\n", 1)[1].split("KUBECONFIG\n", 1)[0]
    with tempfile.TemporaryDirectory() as directory:
        ca = base64.b64encode(make_tls(Path(directory)).ca_pem).decode()
    server = re.search(r"^SERVER=(\S+)$", shell, re.MULTILINE)
    assert server is not None
    token = "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.e30.c2lnbmF0dXJl"  # a service account token's shape

    written = template.replace("$SERVER", server.group(1)).replace("$CA", ca).replace("$TOKEN", token)
    accepted = accept_kubeconfig(written)

    assert accepted.server == "https://k3s.example.com:6443" and accepted.tls_verified
    assert accepted.context == "jushostit"
    assert accepted.document["users"] == [{"name": "control-plane", "user": {"token": token}}]


def test_the_opencost_role_in_the_metering_docs_grants_the_service_proxy_to_the_procedures_identity() -> None:
    metering = (Path(__file__).resolve().parents[2] / "docs" / "metering.md").read_text()
    [block] = re.findall(r"```yaml\n(.*?)```", metering, re.DOTALL)
    objects = {obj["kind"]: obj for obj in yaml.safe_load_all(block)}
    for obj in objects.values():
        kubernetes_validate.validate(obj, "1.30", strict=True)
    assert granted(objects["Role"]) == {Permission("get", "services", subresource="proxy")}
    account = {obj["kind"]: obj for obj in rbac()}["ServiceAccount"]["metadata"]
    assert objects["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", **account}]
    assert objects["RoleBinding"]["roleRef"]["name"] == objects["Role"]["metadata"]["name"]
