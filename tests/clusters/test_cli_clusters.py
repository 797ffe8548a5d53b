"""`jushostit clusters add | list | verify`, in-process through click's test runner, on a scratch database of the
CLI tests' own (tests/test_cli.py says why) and the Kubernetes API stand-in."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.clusters.conftest import kubeconfig_for
from tests.test_cli import cli_env, invoke, isolated_process_state, scratch_database_url

__all__ = ["isolated_process_state", "scratch_database_url"]


def test_a_cluster_is_added_listed_and_verified_from_the_command_line(
    scratch_database_url: str, tmp_path: Path, kube, kube_server
) -> None:
    env = cli_env(scratch_database_url, tmp_path)
    config = tmp_path / "k3s.yaml"
    config.write_text(kubeconfig_for(kube_server))

    added = invoke(["clusters", "add", "--name", "k3s-home", "--kubeconfig", str(config), "--base-domain",
                    "apps.example.com", "--headroom", "35"], env=env)
    assert added.exit_code == 0, added.output
    assert "Cluster k3s-home registered" in added.stdout and "v1.31.4+k3s1" in added.stdout

    listed = invoke(["clusters", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith(f"k3s-home: {kube_server.base_url} (v1.31.4+k3s1), 0 account(s)")

    verified = invoke(["clusters", "verify", "k3s-home", "--timeout", "30"], env=env)
    assert verified.exit_code == 0, verified.output
    assert "[PASS] Cross-tenant traffic is blocked" in verified.stdout
    assert verified.stdout.rstrip().endswith("Isolation verified.")

    kube.enforces_network_policy = False
    unenforced = invoke(["clusters", "verify", "k3s-home", "--timeout", "30"], env=env)
    assert unenforced.exit_code == 1
    assert "[FAIL] Cross-tenant traffic is blocked" in unenforced.stdout
    assert "NetworkPolicy is NOT enforced on this cluster" in unenforced.stdout

    again = invoke(["clusters", "add", "--name", "k3s-home", "--kubeconfig", str(config), "--base-domain",
                    "apps.example.com"], env=env)
    assert again.exit_code == 1 and "registered already" in again.stderr


def test_a_kubeconfig_with_an_exec_plugin_is_refused_with_the_field_and_nothing_is_added(
    scratch_database_url: str, tmp_path: Path, kube_server
) -> None:
    env = cli_env(scratch_database_url, tmp_path)
    document = yaml.safe_load(kubeconfig_for(kube_server))
    document["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                             "command": "/bin/sh", "args": ["-c", "id > /tmp/owned"]}}
    config = tmp_path / "eks.yaml"
    config.write_text(yaml.safe_dump(document))

    refused = invoke(["clusters", "add", "--name", "eks", "--kubeconfig", str(config), "--base-domain",
                      "apps.example.com"], env=env)
    assert refused.exit_code == 1
    assert "Error: The kubeconfig's users[0].user.exec runs a command on our host" in refused.stderr
    assert "Traceback" not in refused.output
    assert not Path("/tmp/owned").exists()
    assert "eks" not in invoke(["clusters", "list"], env=env).stdout

    bad = invoke(["clusters", "add", "--name", "Not_A_Label", "--kubeconfig", str(config), "--base-domain",
                  "apps.example.com"], env=env)
    assert bad.exit_code == 2 and "--name:" in bad.stderr

    unknown = invoke(["clusters", "verify", "nowhere"], env=env)
    assert unknown.exit_code == 1 and "no cluster named 'nowhere'" in unknown.stderr
