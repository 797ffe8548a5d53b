"""`jushostit render`, run as an operator runs it (the installed console script, a process of its own): an
account's manifests read from its facts, or a template's sample, as multi-document YAML that passes the same
checks as the matrix; the Secrets' values only when asked for."""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path

import yaml

from jushostit.runtime.kubernetes.check import violations
from tests.live import Live
from tests.runtime.kubernetes.states import of_kind
from tests.test_cli import invoke, run_cli

DOMAIN = "apps.example.net"


async def render(live: Live, tmp_path: Path, *args: str):
    settings = live.settings
    assert settings.secret_keys is not None and settings.jwt_secret is not None
    return await asyncio.to_thread(
        run_cli, "render", "--base-domain", DOMAIN, *args, data_dir=tmp_path / "cli",
        DATABASE_URL=live.container.database_url, JUSHOSTIT_SECRET_KEYS=settings.secret_keys.get_secret_value(),
        JUSHOSTIT_JWT_SECRET=settings.jwt_secret.get_secret_value(), JUSHOSTIT_LOG_LEVEL="WARNING",
    )


async def test_render_prints_an_account_s_manifests_with_secrets_only_when_asked(live: Live, tmp_path: Path) -> None:
    owner = await live.signup("Render Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "site")
    flows = await live.placed(owner, "flows", "n8n")
    shown = await live.client.get(f"/v1/instances/{flows['id']}/credentials", headers=owner.headers)
    assert shown.status_code == 200, shown.text
    key = {v["name"]: v["value"] for v in shown.json()["values"]}["N8N_ENCRYPTION_KEY"]

    plain = await render(live, tmp_path, "--account", owner.account_id)

    assert plain.returncode == 0, plain.stderr
    assert "Secrets are left out" in plain.stderr
    manifests = list(yaml.safe_load_all(plain.stdout))
    assert violations(manifests) == []
    assert of_kind(manifests, "Secret") == [] and key not in plain.stdout
    [namespace] = of_kind(manifests, "Namespace")
    assert namespace["metadata"]["name"] == f"jushostit-{owner.account_id}"
    [quota] = of_kind(manifests, "ResourceQuota")
    assert quota["spec"]["hard"]["limits.cpu"] == "500m"  # the free plan's
    ingresses = {i["spec"]["rules"][0]["host"] for i in of_kind(manifests, "Ingress")}
    assert ingresses == {f"{site['slug']}.{DOMAIN}", f"{flows['slug']}.{DOMAIN}"}
    assert "&id" not in plain.stdout  # no YAML aliases: every object stands alone

    with_secrets = await render(live, tmp_path, "--account", owner.account_id, "--secrets")

    assert with_secrets.returncode == 0, with_secrets.stderr
    secrets = {s["metadata"]["name"]: s for s in of_kind(list(yaml.safe_load_all(with_secrets.stdout)), "Secret")}
    stored = base64.b64decode(secrets[f"{flows['slug']}-secrets"]["data"]["N8N_ENCRYPTION_KEY"]).decode()
    assert stored == key


async def test_render_prints_a_template_s_sample_at_a_tier_and_level(live: Live, tmp_path: Path) -> None:
    result = await render(live, tmp_path, "--template", "n8n", "--tier", "large", "--level", "stopped")

    assert result.returncode == 0, result.stderr
    manifests = list(yaml.safe_load_all(result.stdout))
    assert violations(manifests) == []
    assert of_kind(manifests, "Ingress") == []
    assert [w["spec"]["replicas"] for w in of_kind(manifests, "Deployment") + of_kind(manifests, "StatefulSet")] == [0, 0]
    [deployment] = of_kind(manifests, "Deployment")
    assert deployment["metadata"]["labels"]["jushostit.io/tier"] == "large"

    unknown_tier = await render(live, tmp_path, "--template", "n8n", "--tier", "huge")
    assert unknown_tier.returncode == 1 and "has no tier 'huge' (it has large, small)" in unknown_tier.stderr
    nobody = uuid.uuid4()
    unknown_account = await render(live, tmp_path, "--account", str(nobody))
    assert unknown_account.returncode == 1 and f"there is no account {nobody}" in unknown_account.stderr
    assert unknown_account.stdout == ""


def test_render_wants_an_account_or_a_template_and_a_sane_cluster() -> None:
    both = invoke(["render", "--base-domain", DOMAIN, "--account", str(uuid.uuid4()), "--template", "n8n"])
    assert both.exit_code == 2 and "either --account or --template" in both.stderr
    levels = invoke(["render", "--base-domain", DOMAIN, "--account", str(uuid.uuid4()), "--level", "stopped"])
    assert levels.exit_code == 2 and "--tier and --level describe a template's sample" in levels.stderr
    bad = invoke(["render", "--base-domain", DOMAIN, "--template", "n8n", "--pod-cidr", "fd00::/8"])
    assert bad.exit_code == 2 and "not an IPv4 range" in bad.stderr
