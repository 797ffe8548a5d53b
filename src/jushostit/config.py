"""Configuration from the environment (`JUSHOSTIT_*`, plus the conventional `DATABASE_URL`).

Every field is documented in docs/configuration.md; a test keeps that file and this class in step.
"""

from __future__ import annotations

import json
import secrets
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class OIDCProvider(BaseModel):
    """One OpenID Connect provider, configured by its discovery URL."""

    model_config = {"extra": "forbid"}

    discovery_url: str
    client_id: str
    client_secret: SecretStr
    scope: str = "openid email profile"


def _listed(value: str, what: str) -> Any:
    """A list setting as written in the environment: comma-separated, or a JSON list."""
    if value.strip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(f"not a valid JSON list of {what}") from None
    return [part.strip() for part in value.split(",") if part.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JUSHOSTIT_", extra="ignore", populate_by_name=True)

    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "JUSHOSTIT_DATABASE_URL")
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    environment: str = "development"
    log_level: str = "INFO"

    secret_keys: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    magic_link_ttl_seconds: int = 900
    email_verification_ttl_seconds: int = Field(default=48 * 3600, ge=60)
    password_reset_ttl_seconds: int = Field(default=1800, ge=60)
    emails_per_address_per_hour: int = Field(default=5, ge=1)
    invite_ttl_seconds: int = 7 * 24 * 3600
    password_min_length: int = 10
    password_min_score: int = Field(default=2, ge=0, le=4)
    password_hash_time_cost: int = 3
    password_hash_memory_kib: int = 65536
    password_hash_parallelism: int = 4

    login_failures_before_delay: int = 5
    login_max_delay_seconds: int = 900
    login_failures_audit_threshold: int = 5
    auth_rate_limit: str = "30/minute"
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(default_factory=list)

    max_body_bytes: int = 1_048_576
    sse_max_streams_per_user: int = Field(default=5, ge=1)
    db_pool_size: int = Field(default=5, ge=1)
    worker_concurrency: int = Field(default=2, ge=1)
    email_worker_concurrency: int = Field(default=1, ge=1)
    run_worker_in_serve: bool = True
    resync_interval_seconds: int = Field(default=300, ge=5)
    expired_retention_days: int = Field(default=30, ge=1)
    free_renewal_window_days: int = Field(default=3, ge=1)
    # The seller printed at the top of every invoice: name, address, tax number, one per line.
    invoice_issuer: str = Field(default="JusHostIt", min_length=1, max_length=2000)

    # Where instances run: child processes of this server (`local`), or the registered Kubernetes clusters.
    runtime: Literal["local", "kubernetes"] = "local"
    # How long one request to a cluster's Kubernetes API may take (registration, node observation, verify, the
    # Kubernetes driver).
    kubernetes_timeout_seconds: int = Field(default=10, ge=1, le=300)

    # How long one request to a data platform's admin API (Hopsworks) may take.
    platform_timeout_seconds: int = Field(default=10, ge=1, le=300)

    # Metering: how often the local runtime's usage (and each cluster's Prometheus) is read; a low value on a
    # running server shows usage within seconds.
    metering_interval_seconds: int = Field(default=300, ge=1, le=3600)
    # A cluster's Prometheus: one URL when a single cluster is registered, or `cluster-name=URL` pairs.
    prometheus_url: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Prometheus needs a scrape or two to hold a window's last samples: windows end this long before now.
    prometheus_lag_seconds: int = Field(default=60, ge=0, le=3600)
    # OpenCost, read hourly through each cluster's API server (service proxy); its costs' currency.
    opencost_enabled: bool = False
    opencost_namespace: str = Field(default="opencost", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    opencost_service: str = Field(default="http:opencost:9003", pattern=r"^[a-z0-9:.-]{1,100}$")
    opencost_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    usage_retention_days: int = Field(default=35, ge=1, le=3650)  # raw samples (hourly usage); daily sums stay
    metering_aggregate_batch: int = Field(default=500_000, ge=100, le=1_000_000)
    # The Stripe billing meter card accounts' usage charges are reported to (its price: one minor unit per unit).
    stripe_usage_meter_event: str = Field(default="jushostit_usage", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_use_tls: bool = False
    smtp_from: str = "JusHostIt <noreply@localhost>"
    email_max_attempts: int = 8

    oidc_providers: dict[str, OIDCProvider] = Field(default_factory=dict)

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    stripe_api_base: str = "https://api.stripe.com"
    default_billing_mode: Literal["card", "invoice", "prepaid", "free"] | None = None

    hubspot_token: SecretStr | None = None
    hubspot_api_base: str = "https://api.hubapi.com"
    hubspot_contract_end_property: str = Field(default="contract_end_date", pattern=r"^[a-z0-9_]{1,100}$")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(value)
            except ArgumentError:  # the value is not repeated: it may hold a password
                raise ValueError("not a database URL (postgresql://user:password@host:5432/name)") from None
        return value

    @field_validator("oidc_providers", mode="before")
    @classmethod
    def _parse_providers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("stripe_webhook_secrets", mode="before")
    @classmethod
    def _parse_webhook_secrets(cls, value: Any) -> Any:
        # The current signing secret and, while rotating, the previous one.
        return _listed(value, "secrets") if isinstance(value, str) else value

    @field_validator("stripe_api_base", "hubspot_api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("not an http(s) URL (e.g. https://api.stripe.com or https://api.hubapi.com)")
        return value.rstrip("/")

    @field_validator("prometheus_url", mode="before")
    @classmethod
    def _parse_prometheus_urls(cls, value: Any) -> Any:
        # One URL (the only cluster's: keyed "" until the cluster is known by name), `name=URL` pairs separated
        # by commas, or a JSON object of names to URLs.
        if isinstance(value, str):
            if value.strip().startswith("{"):
                try:
                    value = json.loads(value)
                except ValueError:
                    raise ValueError("not a valid JSON object of cluster names to URLs") from None
            else:
                pairs: dict[str, str] = {}
                for part in _listed(value, "URLs"):
                    name, _, url = part.partition("=") if "://" not in part.split("=", 1)[0] else ("", "", part)
                    pairs[name.strip()] = url.strip()
                value = pairs
        if isinstance(value, dict):
            for name, url in value.items():
                if not str(url).startswith(("https://", "http://")):
                    raise ValueError(f"{str(url)[:100]!r} (cluster {name or 'any'!r}) is not an http(s) URL")
            return {name: str(url).rstrip("/") for name, url in value.items()}
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        # Comma-separated CIDRs (a bare address is a /32 or /128), or a JSON list of them. Each is parsed here, so
        # a wrong one is named in one clear message (not once per IP version).
        if isinstance(value, str):
            value = _listed(value, "networks")
        if isinstance(value, list):
            networks = []
            for part in value:
                try:
                    networks.append(ip_network(str(part).strip(), strict=False))
                except ValueError:
                    raise ValueError(f"{str(part)[:100]!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
            return networks
        return value

    @model_validator(mode="after")
    def _pool_fits_workers(self) -> Settings:
        # A reconcile job holds two connections (its account lock and its session); emails one; the API needs
        # at least one. The pool may overflow by its own size.
        needed = self.database_connections_needed
        if self.run_worker_in_serve and 2 * self.db_pool_size < needed:
            raise ValueError(
                f"JUSHOSTIT_DB_POOL_SIZE={self.db_pool_size} is too small for the workers: they need {needed} "
                f"connections (2 x JUSHOSTIT_WORKER_CONCURRENCY + JUSHOSTIT_EMAIL_WORKER_CONCURRENCY + 1) and "
                f"the pool gives at most {2 * self.db_pool_size}; raise it to at least {(needed + 1) // 2}"
            )
        return self

    @property
    def database_connections_needed(self) -> int:
        return 2 * self.worker_concurrency + self.email_worker_concurrency + 1

    @property
    def job_pool_size(self) -> int:
        """The job connector's pool: a connection per running job, a LISTEN connection per worker (two), and
        one for heartbeats, stalled-job recovery and defers."""
        return self.worker_concurrency + self.email_worker_concurrency + 3

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def stripe_configured(self) -> bool:
        return self.stripe_secret_key is not None and bool(self.stripe_secret_key.get_secret_value())

    @property
    def hubspot_configured(self) -> bool:
        return self.hubspot_token is not None and bool(self.hubspot_token.get_secret_value())

    @property
    def new_account_billing_mode(self) -> str:
        """How a new account is billed: the configured default, else `card` once Stripe is set up, else `free`."""
        return self.default_billing_mode or ("card" if self.stripe_configured else "free")

    @property
    def email_via_smtp(self) -> bool:
        return bool(self.smtp_host)


@lru_cache
def get_settings() -> Settings:
    return Settings()


SECRETS_FILE = "secrets.json"


def generated_secrets_path(settings: Settings) -> Path:
    return settings.data_dir / SECRETS_FILE


def resolve_secrets(settings: Settings) -> tuple[list[str], str, bool]:
    """Return (fernet keys, jwt secret, generated?) — from the environment, or generated once under the data dir.

    Generating keys is only for the embedded default: production must set JUSHOSTIT_SECRET_KEYS and
    JUSHOSTIT_JWT_SECRET so every replica shares them.
    """
    env_keys = settings.secret_keys.get_secret_value() if settings.secret_keys else ""
    env_jwt = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    stored: dict[str, Any] = {}
    path = generated_secrets_path(settings)
    generated = False
    if not (env_keys and env_jwt):
        if path.exists():
            stored = json.loads(path.read_text())
        else:
            stored = {"secret_keys": [Fernet.generate_key().decode()], "jwt_secret": secrets.token_urlsafe(48)}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(json.dumps(stored))
        generated = True
    keys = [k.strip() for k in env_keys.split(",") if k.strip()] or list(stored["secret_keys"])
    return keys, env_jwt or stored["jwt_secret"], generated
