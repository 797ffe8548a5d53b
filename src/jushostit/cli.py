"""The `jushostit` command line."""

from __future__ import annotations

import asyncio
import enum
import json
import re
import signal
import sys
import uuid
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from jushostit.config import Settings, get_settings
from jushostit.kit.logging import configure_logging

cli = typer.Typer(help="JusHostIt control plane: billing state drives infrastructure.", no_args_is_help=True)
admin_cli = typer.Typer(help="Platform administrators.", no_args_is_help=True)
audit_cli = typer.Typer(help="The append-only audit log.", no_args_is_help=True)
keys_cli = typer.Typer(help="Encryption keys for secrets at rest.", no_args_is_help=True)
clusters_cli = typer.Typer(help="Kubernetes clusters that accounts are placed on.", no_args_is_help=True)
cli.add_typer(admin_cli, name="admin")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(clusters_cli, name="clusters")


# Every command takes the data directory, so the one serve prints (absolute) works from anywhere.
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", file_okay=False,
                 help="Data directory: its embedded PostgreSQL and generated keys (JUSHOSTIT_DATA_DIR, default ./var)."),
]


def _settings(data_dir: Path | None = None) -> Settings:
    settings = get_settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    configure_logging(settings.log_level)
    return settings


def _require_a_database(settings: Settings) -> None:
    """Commands that work on an existing database never create an embedded one where there is none (an admin
    created in a fresh ./var would be in a database no server uses)."""
    if settings.database_url or (settings.data_dir / "pg" / "PG_VERSION").exists():
        return
    typer.echo(
        f"Error: there is no JusHostIt database in {settings.data_dir.resolve()}. Pass the data directory serve "
        "uses (--data-dir, or JUSHOSTIT_DATA_DIR; serve prints the exact command when it starts), or set "
        "DATABASE_URL.",
        err=True,
    )
    raise typer.Exit(1)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (JUSHOSTIT_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (JUSHOSTIT_PORT).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run the API and a job worker; starts the embedded PostgreSQL when DATABASE_URL is unset."""
    from jushostit import server

    settings = _settings(data_dir)
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    raise typer.Exit(asyncio.run(server.serve(settings.model_copy(update=overrides))))


@cli.command()
def worker(data_dir: DataDir = None) -> None:
    """Run job workers only (scale-out); the API runs elsewhere."""
    from jushostit import server

    raise typer.Exit(asyncio.run(server.worker(_settings(data_dir))))


@cli.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply pending database migrations (serve and worker also do this on start)."""
    from jushostit import container
    from jushostit.kit import migrate as migrations

    settings = _settings(data_dir)
    typer.echo("Applying migrations…")
    with container.database_url(settings) as url:
        migrations.upgrade(url)
    typer.echo(f"Database is at revision {migrations.head_revision()} (head).")


@cli.command("config")
def show_config(data_dir: DataDir = None) -> None:
    """Print the effective configuration, secrets masked."""
    settings = get_settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    typer.echo(json.dumps(masked_settings(settings), indent=2, sort_keys=True))


def masked_settings(settings: Settings) -> dict[str, Any]:
    def mask(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "********" if value.get_secret_value() else ""
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if hasattr(value, "model_dump"):
            return {k: mask(getattr(value, k)) for k in type(value).model_fields}
        return value if isinstance(value, (int, float, bool, type(None))) else str(value)

    values = {name: mask(getattr(settings, name)) for name in Settings.model_fields}
    if settings.database_url:
        from sqlalchemy.engine import make_url

        values["database_url"] = make_url(settings.database_url).render_as_string(hide_password=True)
    return values


@admin_cli.command("create")
def admin_create(
    email: Annotated[str, typer.Option(help="Email of the platform admin.")],
    password: Annotated[str | None, typer.Option(help="Password; prompted for when omitted.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a platform admin, or make an existing user one, in the database of an existing data directory
    (serve prints the exact command) or DATABASE_URL's."""
    from jushostit.auth import service
    from jushostit.bootstrap import open_container
    from jushostit.kit.errors import AppError

    settings = _settings(data_dir)
    _require_a_database(settings)
    if password is None:
        # typer.prompt hides the input (getpass underneath) and can be driven by click's test runner.
        password = typer.prompt("Password", hide_input=True)
        if typer.prompt("Repeat password", hide_input=True) != password:
            typer.echo("Passwords do not match.", err=True)
            raise typer.Exit(2)

    async def run() -> str:
        async with open_container(settings) as c, c.database.unit_of_work() as session:
            return await service.create_platform_admin(
                session, service.AuthConfig(settings, c.jwt_secret), email=email, password=password
            )

    try:
        outcome = asyncio.run(run())
    except AppError as error:
        typer.echo(f"Error: {error.message}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"Platform admin {outcome}: {email}")


@audit_cli.command("verify")
def audit_verify(data_dir: DataDir = None) -> None:
    """Check the audit hash chain; exits 1 and names the first entry that does not match."""
    from jushostit.audit import service
    from jushostit.audit.repository import AuditRepository
    from jushostit.bootstrap import open_container

    settings = _settings(data_dir)
    _require_a_database(settings)

    async def run() -> tuple[int, service.ChainProblem | None]:
        async with open_container(settings) as c, c.database.sessionmaker() as session:
            total = await AuditRepository(session).count()
            with typer.progressbar(length=total, label="Verifying audit log", file=sys.stderr) as bar:
                problem = await service.verify(session, progress=lambda _: bar.update(1))
            return total, problem

    total, problem = asyncio.run(run())
    if problem:
        typer.echo(f"Audit log BROKEN at entry seq={problem.seq}: {problem.problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"Audit log intact: {total} entries verified.")


@keys_cli.command("rotate")
def keys_rotate(data_dir: DataDir = None) -> None:
    """Re-encrypt every stored secret with the first key of JUSHOSTIT_SECRET_KEYS."""
    from jushostit.bootstrap import open_container
    from jushostit.vault import service

    settings = _settings(data_dir)
    _require_a_database(settings)

    async def run() -> int:
        async with open_container(settings) as c:
            with typer.progressbar(length=0, label="Re-encrypting secrets", file=sys.stderr, show_pos=True) as bar:
                return await service.rotate_all(c.database, c.secret_box, progress=bar.update)

    done = asyncio.run(run())
    typer.echo(f"Re-encrypted {done} secrets with the first key; older keys can now be removed.")


class RenderLevel(enum.StrEnum):
    running = "running"
    throttled = "throttled"
    stopped = "stopped"


@cli.command()
def render(
    base_domain: Annotated[str, typer.Option(help="The cluster's base domain: instances at <slug>.<base domain>.")],
    account: Annotated[uuid.UUID | None, typer.Option(help="Print this account's manifests.")] = None,
    template: Annotated[str | None, typer.Option(help="Print a sample of this template instead (no account).")] = None,
    tier: Annotated[str | None, typer.Option(help="The sample's tier (default: the template's own default).")] = None,
    level: Annotated[RenderLevel | None, typer.Option(help="The sample's level (default: running).")] = None,
    secrets: Annotated[bool, typer.Option(
        "--secrets/--no-secrets", help="Include the account's Secrets, their values decrypted (default: left out, "
                                       "for GitOps; `kubectl apply` needs them)."
    )] = False,
    ingress_class: Annotated[str, typer.Option(help="The cluster's IngressClass.")] = "traefik",
    cert_issuer: Annotated[str, typer.Option(
        help="The cert-manager ClusterIssuer for the instances' certificates; empty: no TLS.")] = "letsencrypt",
    ingress_namespace: Annotated[str, typer.Option(help="Where the ingress controller runs.")] = "kube-system",
    pod_cidr: Annotated[str, typer.Option(help="The cluster's pod range.")] = "10.42.0.0/16",
    service_cidr: Annotated[str, typer.Option(help="The cluster's service range.")] = "10.43.0.0/16",
    data_dir: DataDir = None,
) -> None:
    """Print Kubernetes manifests as multi-document YAML (for GitOps or `kubectl apply -f -`): an account's
    (--account), or a sample of a template (--template, --tier, --level). Cluster defaults are K3s's."""
    import yaml

    from jushostit.bootstrap import open_container
    from jushostit.catalog.repository import CatalogRepository
    from jushostit.catalog.service import template_spec
    from jushostit.catalog.spec import SeatTemplateSpec
    from jushostit.entitlement import Level
    from jushostit.reconcile.manifests import account_manifests, sample_manifests
    from jushostit.runtime.kubernetes.cluster import ClusterSettings

    if (account is None) == (template is None):
        typer.echo("Error: pass either --account or --template.", err=True)
        raise typer.Exit(2)
    if account is not None and (tier is not None or level is not None):
        typer.echo("Error: --tier and --level describe a template's sample; an account's levels are its own.", err=True)
        raise typer.Exit(2)
    try:
        cluster = ClusterSettings(base_domain=base_domain, ingress_class=ingress_class, cert_issuer=cert_issuer or None,
                                  ingress_namespace=ingress_namespace, pod_cidr=pod_cidr, service_cidr=service_cidr)
    except ValueError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from error
    settings = _settings(data_dir)
    _require_a_database(settings)

    async def run() -> list[dict[str, Any]]:
        async with open_container(settings) as c, c.database.sessionmaker() as session:
            if account is not None:
                found = await account_manifests(session, settings, c.secret_box, account, cluster,
                                                include_secrets=secrets)
                if found is None:
                    raise LookupError(f"there is no account {account}")
                return found
            assert template is not None
            row = await CatalogRepository(session).template_by_code(template)
            if row is None:
                raise LookupError(f"there is no template {template!r}")
            spec = template_spec(row)
            if isinstance(spec, SeatTemplateSpec):
                raise LookupError(f"template {template!r} is a seat: it runs on its platform and has no manifests")  # noqa: TRY004 - reported as a lookup that found nothing to render
            chosen = tier or spec.default_tier
            if chosen not in spec.tiers:
                raise LookupError(f"template {template!r} has no tier {chosen!r} (it has {', '.join(sorted(spec.tiers))})")
            return sample_manifests(spec, chosen, Level[(level or RenderLevel.running).value], cluster)

    try:
        manifests = asyncio.run(run())
    except LookupError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from error
    if account is not None and not secrets:
        typer.echo("Secrets are left out; --secrets includes them with their values.", err=True)
    if not manifests:
        typer.echo("Nothing to render: the account is deleted.", err=True)
    typer.echo(yaml.safe_dump_all(manifests, sort_keys=False), nl=False)


@clusters_cli.command("add")
def clusters_add(
    name: Annotated[str, typer.Option(help="The cluster's name here (a DNS label, e.g. k3s-home).")],
    kubeconfig: Annotated[Path, typer.Option(
        exists=True, dir_okay=False, readable=True,
        help="Its kubeconfig: inline credentials only (a token or client certificate data), no exec plugin, no "
             "file paths. Its current context is used.")],
    base_domain: Annotated[str, typer.Option(help="Instances are served at <slug>.<base domain>.")],
    ingress_class: Annotated[str, typer.Option(help="The cluster's IngressClass.")] = "traefik",
    issuer: Annotated[str, typer.Option(help="The cert-manager ClusterIssuer; empty: none.")] = "letsencrypt",
    ingress_namespace: Annotated[str, typer.Option(help="Where the ingress controller runs.")] = "kube-system",
    pod_cidr: Annotated[str, typer.Option(help="The cluster's pod range.")] = "10.42.0.0/16",
    service_cidr: Annotated[str, typer.Option(help="The cluster's service range.")] = "10.43.0.0/16",
    cpu_overcommit: Annotated[float, typer.Option(help="Sum of CPU limits per allocatable CPU (1-10).")] = 3.0,
    memory_overcommit: Annotated[float, typer.Option(help="Sum of memory limits per allocatable byte (1-10).")] = 1.0,
    headroom: Annotated[int, typer.Option(help="Percent of every node's budget kept free (0-90).")] = 30,
    data_dir: DataDir = None,
) -> None:
    """Register a cluster after a connection test (GET /version and a permission check); nothing is recorded
    when it fails. The kubeconfig is stored encrypted."""
    from jushostit.bootstrap import open_container
    from jushostit.clusters import service
    from jushostit.clusters.schemas import ClusterCreate
    from jushostit.kit.errors import AppError

    try:
        data = ClusterCreate(
            name=name, kubeconfig=kubeconfig.read_text(), base_domain=base_domain, ingress_class=ingress_class,
            cert_issuer=issuer or None, ingress_namespace=ingress_namespace, pod_cidr=pod_cidr,
            service_cidr=service_cidr, cpu_overcommit=cpu_overcommit, memory_overcommit=memory_overcommit,
            headroom_percent=headroom,
        )
    except ValidationError as error:
        for problem in error.errors():
            typer.echo(f"Error: --{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}", err=True)
        raise typer.Exit(2) from None
    settings = _settings(data_dir)
    _require_a_database(settings)

    async def run() -> tuple[str, str]:
        async with open_container(settings) as c, c.database.unit_of_work() as session:
            cluster = await service.register(session, c.secret_box, data=data,
                                             timeout=settings.kubernetes_timeout_seconds)
            return cluster.api_server, cluster.kubernetes_version

    try:
        server, version = asyncio.run(run())
    except AppError as error:
        typer.echo(f"Error: {error.message}", err=True)
        details = error.details if isinstance(error.details, dict) else {}
        for missing in details.get("missing", []):
            typer.echo(f"  missing: {missing}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"Cluster {name} registered: {server}, Kubernetes {version}. Its nodes are observed within a "
               f"minute; prove its isolation with `jushostit clusters verify {name}`.")


@clusters_cli.command("list")
def clusters_list(data_dir: DataDir = None) -> None:
    """Every cluster with its nodes and how many more default pods (0.25/512Mi requested, 1/1Gi limits) fit."""
    from jushostit.bootstrap import open_container
    from jushostit.clusters.endpoints import cluster_reads
    from jushostit.clusters.repository import ClusterRepository
    from jushostit.clusters.schemas import ClusterRead

    settings = _settings(data_dir)
    _require_a_database(settings)

    async def run() -> list[ClusterRead]:
        async with open_container(settings) as c, c.database.sessionmaker() as session:
            return await cluster_reads(session, await ClusterRepository(session).all())

    clusters = asyncio.run(run())
    if not clusters:
        typer.echo("No cluster is registered (`jushostit clusters add`).")
    for cluster in clusters:
        ready = sum(node.takes_placements for node in cluster.nodes)
        flags = " [cordoned]" if cluster.cordoned else ""
        typer.echo(f"{cluster.name}{flags}: {cluster.api_server} ({cluster.kubernetes_version}), {cluster.accounts} "
                   f"account(s), {ready}/{len(cluster.nodes)} node(s) taking placements, "
                   f"{cluster.utilisation.burstable_pods_left} more default pods fit"
                   + (f"; last observation failed: {cluster.observe_error}" if cluster.observe_error else ""))
        for node in cluster.nodes:
            used = node.utilisation
            typer.echo(f"  {node.name}: {node.refusal or 'takes placements'}; limits CPU "
                       f"{used.cpu_limits_millicores}/{used.cpu_limits_budget_millicores}m, memory "
                       f"{used.memory_limits_mib}/{used.memory_limits_budget_mib} MiB; {used.pods} pods; "
                       f"{used.burstable_pods_left} more default pods fit")


@clusters_cli.command("verify")
def clusters_verify(
    name: Annotated[str, typer.Argument(help="The cluster's name.")],
    image: Annotated[str, typer.Option(help="The probe pods' image (busybox: sh, wget, nslookup, httpd).")] = "busybox:1.37",
    egress_url: Annotated[str, typer.Option(help="An internet address allowed egress must reach.")] = "http://example.com/",
    timeout: Annotated[float, typer.Option(help="Seconds each probe pod may take to finish.")] = 120.0,
    data_dir: DataDir = None,
) -> None:
    """Prove tenant isolation on the live cluster with probe pods in two throwaway namespaces: cross-tenant
    traffic and the metadata address blocked, DNS and allowed egress working. Exits 1 unless every check passes."""
    from jushostit.bootstrap import open_container
    from jushostit.clusters import kube, service
    from jushostit.clusters.repository import ClusterRepository
    from jushostit.clusters.verify import Report, verify_isolation
    from jushostit.kit.errors import AppError
    from jushostit.runtime.kubernetes.directory import cluster_settings
    from jushostit.runtime.kubernetes.manifests import INTERNET_LABEL, network_policies

    settings = _settings(data_dir)
    _require_a_database(settings)

    async def run() -> Report | None:
        async with open_container(settings) as c:
            async with c.database.sessionmaker() as session:
                cluster = await ClusterRepository(session).by_name(name)
                if cluster is None:
                    return None
                kubeconfig = await service.kubeconfig_of(session, c.secret_box, cluster.id)
                on_cluster = cluster_settings(cluster)

            def policies(namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
                return network_policies(namespace, labels, on_cluster)  # exactly what a tenant namespace gets

            async with kube.connect(kubeconfig, timeout=settings.kubernetes_timeout_seconds) as api:
                return await verify_isolation(api, policies, (INTERNET_LABEL, "true"), image=image,
                                              egress_url=egress_url, timeout=timeout)

    try:
        report = asyncio.run(run())
    except AppError as error:
        typer.echo(f"Error: {error.message}", err=True)
        raise typer.Exit(1) from error
    if report is None:
        typer.echo(f"Error: there is no cluster named {name!r} (`jushostit clusters list`).", err=True)
        raise typer.Exit(1)
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.passed else 1)


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _quiet_third_party_notices() -> None:
    """Keep notices that say nothing to an operator out of every command's output, each filtered narrowly."""
    # authlib 1.9.x (pyproject pins authlib<2) warns at import when the optional `httpx2` package is absent and
    # it falls back to httpx, which is the client we use and pin. Its AuthlibDeprecationWarning is forced
    # visible by authlib.deprecate's own `simplefilter("always", ...)`, run when that module is first imported
    # and put in front of any filter added earlier; so import it first and put ours in front of it, for that
    # category and message only. Drop this when authlib no longer warns (or when we move to httpx2).
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.filterwarnings(
        "ignore", message=r"The httpx module is deprecated; please use httpx2 instead", category=AuthlibDeprecationWarning
    )
    # pgserver (pinned 0.6.0) says so when it falls back to a runtime dir of its own; nothing to act on.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


def main() -> None:
    # Exit through Python on SIGTERM so `finally` blocks and atexit run and an embedded PostgreSQL this
    # command attached to is released (or stopped, when it was the last user), not orphaned (REFERENCE §4).
    # serve and worker replace this with their own graceful handlers.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _quiet_third_party_notices()
    try:
        cli()
    except ValidationError as error:
        if error.title != Settings.__name__:
            raise
        raise SystemExit(configuration_error(error)) from None
    except SettingsError as error:  # a value the settings source could not even decode (JSON of a dict)
        raise SystemExit(undecodable_setting(error)) from None


def setting_name(field: str) -> str:
    """A setting's field as the operator sets it: its environment variable."""
    if field.isupper():  # named by its alias, as it was set (DATABASE_URL)
        return field
    return "DATABASE_URL" if field == "database_url" else f"JUSHOSTIT_{field.upper()}"


def configuration_error(error: ValidationError) -> str:
    """A refused configuration: one line per setting, named as it is set (the environment variable), without
    its value (it may be a secret) and without a traceback."""
    problems: dict[str, list[str]] = {}
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        message = str(problem["msg"]).removeprefix("Value error, ")
        found = problems.setdefault(setting_name(field) if field else "", [])
        if message not in found:
            found.append(message)
    return "\n".join(
        f"jushostit: invalid configuration{f' {name}' if name else ''}: {'; '.join(messages)} "
        "(see docs/configuration.md)"
        for name, messages in problems.items()
    )


def undecodable_setting(error: SettingsError) -> str:
    found = re.search(r'field "([a-z_]+)"', str(error))
    name = setting_name(found.group(1)) if found else "a setting"
    return f"jushostit: invalid configuration {name}: not valid JSON (see docs/configuration.md)"
