"""Accepting a kubeconfig: only inline credentials over https, one context; never a command or a file of our host."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jushostit.clusters.kubeconfig import KubeconfigRefused, accept_kubeconfig


def _pem_pair() -> tuple[str, str]:
    """A self-signed certificate and its key, base64 of PEM as kubeconfigs carry them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "system:admin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return (base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
            base64.b64encode(key_pem).decode())


PEM_CA, PEM_KEY = _pem_pair()


def kubeconfig(*, cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
               **top: Any) -> dict[str, Any]:
    """A kubeconfig as K3s writes it (/etc/rancher/k3s/k3s.yaml), with a token instead of its client certificate."""
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": "default",
        "clusters": [{"name": "default", "cluster": cluster or {
            "server": "https://10.0.0.5:6443", "certificate-authority-data": PEM_CA}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "users": [{"name": "default", "user": user or {"token": "k3s-admin-token"}}],
        **top,
    }


def refusal(document: dict[str, Any] | str) -> KubeconfigRefused:
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    with pytest.raises(KubeconfigRefused) as refused:
        accept_kubeconfig(text)
    assert refused.value.status_code == 422 and refused.value.code == "invalid_kubeconfig"
    return refused.value


def test_a_k3s_kubeconfig_is_accepted_with_its_ca_and_client_certificate() -> None:
    accepted = accept_kubeconfig(yaml.safe_dump(kubeconfig(user={
        "client-certificate-data": PEM_CA, "client-key-data": PEM_KEY})))
    assert accepted.server == "https://10.0.0.5:6443"
    assert accepted.tls_verified is True
    assert accepted.context == "default"


def test_json_is_yaml_too_and_insecure_skip_tls_verify_is_accepted_but_marked_unverified() -> None:
    accepted = accept_kubeconfig(json.dumps(kubeconfig(cluster={
        "server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True})))
    assert accepted.tls_verified is False


@pytest.mark.parametrize(
    ("user", "field", "words"),
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws", "args": ["eks"]}},
         "users[0].user.exec", "runs a command on our host"),
        ({"auth-provider": {"name": "gcp", "config": {"cmd-path": "/usr/bin/gcloud"}}},
         "users[0].user.auth-provider", "runs an authentication plugin"),
        ({"tokenFile": "/etc/shadow"}, "users[0].user.tokenFile", "file path"),
        ({"client-certificate": "/root/.ssh/id_rsa", "client-key-data": PEM_KEY},
         "users[0].user.client-certificate", "file path"),
        ({"client-certificate-data": PEM_CA, "client-key": "/root/key.pem"}, "users[0].user.client-key", "file path"),
        ({"username": "admin", "password": "secret"}, "users[0].user.password", "basic authentication"),
        ({"token": "t", "as": "system:admin"}, "users[0].user.as", "impersonation"),
        ({"client-certificate-data": PEM_CA}, "users[0].user", "needs a token"),
        ({"token": ""}, "users[0].user.token", "non-empty"),
        ({"client-certificate-data": "not base64!", "client-key-data": PEM_KEY},
         "users[0].user.client-certificate-data", "base64"),
        ({"client-certificate-data": PEM_CA, "client-key-data": PEM_CA}, "users[0].user.client-key-data", "PEM private key"),
        ({"client-certificate-data": PEM_KEY, "client-key-data": PEM_KEY},
         "users[0].user.client-certificate-data", "PEM certificate"),
    ],
    ids=["exec", "auth-provider", "tokenFile", "client-certificate path", "client-key path", "basic auth",
         "impersonation", "half a certificate", "empty token", "bad base64", "a certificate for a key",
         "a key for a certificate"],
)
def test_a_user_that_would_run_a_command_or_read_a_file_on_our_host_is_refused_naming_the_field(
    user, field, words
) -> None:
    refused = refusal(kubeconfig(user=user))
    assert refused.details == {"field": field}
    assert words in refused.message
    assert "/etc/shadow" not in refused.message and "secret" not in refused.message  # the value is never echoed


@pytest.mark.parametrize(
    ("cluster", "field", "words"),
    [
        ({"server": "https://10.0.0.5:6443", "certificate-authority": "/etc/ssl/private/ca.pem"},
         "clusters[0].cluster.certificate-authority", "file path"),
        ({"server": "http://10.0.0.5:8080"}, "clusters[0].cluster.server", "https://"),
        ({"server": "https://10.0.0.5:6443", "proxy-url": "socks5://localhost:1080"},
         "clusters[0].cluster.proxy-url", "not supported"),
        ({"server": "https://10.0.0.5:6443", "certificate-authority-data": PEM_CA, "insecure-skip-tls-verify": True},
         "clusters[0].cluster.insecure-skip-tls-verify", "give one"),
        ({"server": "https://10.0.0.5:6443", "certificate-authority-data": base64.b64encode(b"junk").decode()},
         "clusters[0].cluster.certificate-authority-data", "PEM"),
        ({"server": "https://10.0.0.5:6443", "something-new": 1}, "clusters[0].cluster.something-new", "not supported"),
    ],
    ids=["CA file", "plain http", "proxy", "CA and insecure", "CA not PEM", "unknown field"],
)
def test_a_cluster_entry_we_cannot_honour_is_refused_naming_the_field(cluster, field, words) -> None:
    refused = refusal(kubeconfig(cluster=cluster))
    assert refused.details == {"field": field}
    assert words in refused.message


def test_the_current_context_is_used_and_only_it_is_kept() -> None:
    document = kubeconfig()
    document["clusters"].append({"name": "other", "cluster": {"server": "https://other:6443", "insecure-skip-tls-verify": True}})
    document["users"].append({"name": "other", "user": {"exec": {"apiVersion": "v1", "command": "evil"}}})
    document["contexts"].append({"name": "other", "context": {"cluster": "other", "user": "other"}})
    accepted = accept_kubeconfig(yaml.safe_dump(document))
    assert accepted.context == "default"
    assert [c["name"] for c in accepted.document["clusters"]] == ["default"]
    assert "evil" not in accepted.serialized() and "other" not in accepted.serialized()
    assert accepted.config().cluster.server == "https://10.0.0.5:6443"


def test_several_contexts_without_a_current_one_are_ambiguous_and_refused() -> None:
    document = kubeconfig()
    del document["current-context"]
    document["contexts"].append({"name": "staging", "context": {"cluster": "default", "user": "default"}})
    refused = refusal(document)
    assert refused.details == {"field": "current-context"}
    assert "2 contexts" in refused.message
    # One context and no current-context: that one.
    document["contexts"].pop()
    assert accept_kubeconfig(yaml.safe_dump(document)).context == "default"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ("clusters: [unclosed", "document"),
        ("just a string", "document"),
        (kubeconfig(**{"current-context": "nowhere"}), "current-context"),
        ({**kubeconfig(), "contexts": [{"name": "default", "context": {"cluster": "default"}}]},
         "contexts[0].context.user"),
        ({**kubeconfig(), "contexts": [{"name": "default", "context": {"cluster": "gone", "user": "default"}}]},
         "contexts[0].context.cluster"),
        ({**kubeconfig(), "clusters": {"name": "default"}}, "clusters"),
        ({**kubeconfig(), "users": [{"user": {"token": "t"}}]}, "users[0]"),
    ],
    ids=["not yaml", "not a mapping", "unknown current context", "no user", "unknown cluster", "clusters not a list",
         "a user without a name"],
)
def test_a_malformed_kubeconfig_is_refused_naming_where(document, field) -> None:
    assert refusal(document).details == {"field": field}
