"""The `jushostit` command line, in-process through click's test runner, on a real PostgreSQL.

The commands that write (`keys rotate`, `admin create`) run against a scratch database of their own: rotation
touches every stored secret of a database, and an admin's audit entry can never be deleted again (the table
is append-only), so neither may land in the database the other tests of this xdist worker share.
(`serve`, `worker`, `migrate` and `audit verify` run as real processes in tests/e2e/test_serve.py.)
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
import typer
from cryptography.fernet import Fernet
from typer.testing import CliRunner, Result

from jushostit.auth.passwords import hasher
from jushostit.cli import cli
from jushostit.config import get_settings
from jushostit.kit import migrate
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import libpq_url
from tests.conftest import _recreate_database, _with_database, _worker_name

ADMIN_PASSWORD = "a sturdy admin passphrase"


def command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command of the CLI, walked from the click tree (a new command is picked up)."""
    paths: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():  # a group (typer vendors its own click)
            walk(sub, (*path, name))

    walk(typer.main.get_command(cli), ())
    return paths


@pytest.fixture(autouse=True)
def isolated_process_state() -> Iterator[None]:
    """The CLI configures logging for the process and caches settings from the environment: undo both."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog_config = structlog.get_config()
    get_settings.cache_clear()
    try:
        yield
    finally:
        get_settings.cache_clear()
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**structlog_config)


def invoke(args: list[str], env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
    get_settings.cache_clear()  # settings are read from the environment CliRunner sets for this call
    try:
        return CliRunner().invoke(cli, args, env=env, input=input)
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "jushostit")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = invoke([*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert " ".join(path) in result.output
    assert "--help" in result.output


def test_the_issue_commands_all_exist() -> None:
    assert {
        ("serve",), ("worker",), ("migrate",), ("config",), ("admin", "create"), ("audit", "verify"),
        ("keys", "rotate"), ("clusters", "add"), ("clusters", "list"), ("clusters", "verify"),
    } <= set(command_paths())


def test_config_prints_the_effective_configuration_as_json_with_secrets_masked(tmp_path: Path) -> None:
    keys = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    canaries = {
        "JUSHOSTIT_SECRET_KEYS": keys,
        "JUSHOSTIT_JWT_SECRET": "jwt-canary-5d1c0e",
        "JUSHOSTIT_SMTP_PASSWORD": "smtp-canary-77ab19",
        "DATABASE_URL": "postgresql://jh_user:db-canary-a91f@db.example.internal:5433/jushostit",
    }
    oidc = {"acme": {"discovery_url": "https://idp.example/.well-known/openid-configuration",
                     "client_id": "acme-client", "client_secret": "oidc-canary-3e8d"}}
    env: dict[str, str | None] = {
        **canaries,
        "JUSHOSTIT_DATABASE_URL": None,
        "JUSHOSTIT_OIDC_PROVIDERS": json.dumps(oidc),
        "JUSHOSTIT_SMTP_HOST": "smtp.example.internal",
        "JUSHOSTIT_PORT": "8123",
        "JUSHOSTIT_DATA_DIR": str(tmp_path),
    }

    result = invoke(["config"], env=env)

    assert result.exit_code == 0, result.output
    for secret in [*canaries.values(), *keys.split(","), "db-canary-a91f", "oidc-canary-3e8d"]:
        assert secret not in result.output
    shown = json.loads(result.stdout)
    assert shown["secret_keys"] == shown["jwt_secret"] == shown["smtp_password"] == "********"
    assert shown["oidc_providers"]["acme"]["client_secret"] == "********"
    assert shown["oidc_providers"]["acme"]["client_id"] == "acme-client"  # not a secret: still shown
    assert shown["database_url"] == "postgresql://jh_user:***@db.example.internal:5433/jushostit"
    assert shown["port"] == 8123 and shown["smtp_host"] == "smtp.example.internal"
    assert shown["data_dir"] == str(tmp_path)
    # Unset secrets are shown as empty, not as a mask that suggests a value is configured.
    assert invoke_config_without_secrets(tmp_path)["smtp_password"] in ("", None)


def invoke_config_without_secrets(tmp_path: Path) -> dict[str, Any]:
    result = invoke(["config"], env={"JUSHOSTIT_SMTP_PASSWORD": None, "JUSHOSTIT_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def scratch_database_url(server_url: str) -> Iterator[str]:
    """A migrated database of this module's own on the test server (see the module docstring)."""
    name = f"jushostit_cli_{_worker_name()}"
    admin = libpq_url(server_url)
    _recreate_database(admin, name)
    url = _with_database(server_url, name)
    migrate.upgrade(url)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cli_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str | None]:
    return {
        "DATABASE_URL": database_url,
        "JUSHOSTIT_DATABASE_URL": None,
        "JUSHOSTIT_DATA_DIR": str(data_dir),
        "JUSHOSTIT_JWT_SECRET": "cli-test-jwt-" + uuid.uuid4().hex,
        "JUSHOSTIT_PASSWORD_HASH_TIME_COST": "1",
        "JUSHOSTIT_PASSWORD_HASH_MEMORY_KIB": "1024",
        "JUSHOSTIT_PASSWORD_HASH_PARALLELISM": "1",
        "JUSHOSTIT_LOG_LEVEL": "WARNING",
        **extra,
    }


@pytest.fixture
def stored_secrets(scratch_database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """1,234 secrets (several rotation batches) committed, encrypted with an OLD key; removed afterwards."""
    old_key = Fernet.generate_key().decode()
    old_box = SecretBox([old_key])
    owner = uuid.uuid4()
    plaintexts = {f"secret-{i:04d}": f"value {i} {uuid.uuid4().hex}" for i in range(1234)}
    with psycopg.connect(libpq_url(scratch_database_url), connect_timeout=10) as conn:
        conn.cursor().executemany(
            "INSERT INTO stored_secrets (id, owner_type, owner_id, name, ciphertext, rotated_at)"
            " VALUES (%s, 'test', %s, %s, %s, now())",
            [(uuid.uuid4(), owner, name, old_box.encrypt(value)) for name, value in plaintexts.items()],
        )
    try:
        yield old_key, plaintexts
    finally:
        with psycopg.connect(libpq_url(scratch_database_url), connect_timeout=10) as conn:
            conn.execute("DELETE FROM stored_secrets WHERE owner_id = %s", (owner,))


def read_secrets(database_url: str) -> dict[str, str]:
    with psycopg.connect(libpq_url(database_url), connect_timeout=10) as conn:
        return dict(conn.execute("SELECT name, ciphertext FROM stored_secrets").fetchall())


def test_keys_rotate_re_encrypts_every_secret_with_the_first_key(
    scratch_database_url: str, stored_secrets: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    old_key, plaintexts = stored_secrets
    new_key = Fernet.generate_key().decode()
    env = cli_env(scratch_database_url, tmp_path, JUSHOSTIT_SECRET_KEYS=f"{new_key},{old_key}")
    before = read_secrets(scratch_database_url)

    result = invoke(["keys", "rotate"], env=env)

    assert result.exit_code == 0, result.output
    assert f"Re-encrypted {len(plaintexts)} secrets" in result.stdout
    after = read_secrets(scratch_database_url)
    assert set(after) == set(plaintexts)
    new_only, old_only = SecretBox([new_key]), SecretBox([old_key])
    assert {name: new_only.decrypt(token) for name, token in after.items()} == plaintexts
    assert all(after[name] != before[name] for name in plaintexts)
    with pytest.raises(ValueError, match="cannot be decrypted"):
        old_only.decrypt(next(iter(after.values())))

    # Running it again (an operator retrying) is harmless: still readable with the new key alone.
    again = invoke(["keys", "rotate"], env=env)
    assert again.exit_code == 0, again.output
    rotated_twice = read_secrets(scratch_database_url)
    assert {name: new_only.decrypt(token) for name, token in rotated_twice.items()} == plaintexts
    assert not (tmp_path / "secrets.json").exists(), "keys come from the environment; nothing generated"


def admin_row(database_url: str, email: str) -> tuple[bool, str] | None:
    with psycopg.connect(libpq_url(database_url), connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT is_platform_admin, password_hash FROM users WHERE email = %s", (email,)
        ).fetchone()
    return (bool(row[0]), str(row[1])) if row else None


def test_admin_create_refuses_a_common_password_with_a_clear_error(
    scratch_database_url: str, tmp_path: Path
) -> None:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    env = cli_env(scratch_database_url, tmp_path)
    result = invoke(["admin", "create", "--email", email, "--password", "password123"], env=env)
    assert result.exit_code == 1
    assert "Error: Password is too common" in result.stderr
    assert "Traceback" not in result.output
    assert admin_row(scratch_database_url, email) is None


def test_admin_create_prompts_for_the_password_when_none_is_given(
    scratch_database_url: str, tmp_path: Path
) -> None:
    env = cli_env(scratch_database_url, tmp_path)
    email = f"Admin-{uuid.uuid4().hex[:8]}@Example.com"

    command = ["admin", "create", "--email", email]

    mismatch = invoke(command, env=env, input=f"{ADMIN_PASSWORD}\nsomething else\n")
    assert mismatch.exit_code == 2
    assert "Passwords do not match" in mismatch.stderr
    assert admin_row(scratch_database_url, email.lower()) is None

    weak = invoke(command, env=env, input="password123\npassword123\n")
    assert weak.exit_code == 1 and "too common" in weak.stderr
    assert admin_row(scratch_database_url, email.lower()) is None

    created = invoke(command, env=env, input=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n")
    assert created.exit_code == 0, created.output
    assert "Password:" in created.stdout and "Repeat password:" in created.stdout
    assert ADMIN_PASSWORD not in created.output, "the prompt must not echo the password"
    assert f"Platform admin created: {email}" in created.stdout
    row = admin_row(scratch_database_url, email.lower())
    assert row is not None and row[0] is True
    assert hasher(1, 1024, 1).verify(ADMIN_PASSWORD, row[1])

    again = invoke(["admin", "create", "--email", email, "--password", ADMIN_PASSWORD], env=env)
    assert again.exit_code == 0 and "already exists" in again.stdout


JUSHOSTIT = Path(sys.executable).parent / "jushostit"


def run_cli(*args: str, data_dir: Path, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed console script as an operator runs it: a process of its own, on a clean environment, with
    every warning Python would hide by default shown (a deprecation must not reach an operator either way)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JUSHOSTIT_") and k != "DATABASE_URL"}
    clean.update(JUSHOSTIT_DATA_DIR=str(data_dir), PYTHONWARNINGS="default", LC_ALL="C.UTF-8", **env)
    return subprocess.run([str(JUSHOSTIT), *args], env=clean, capture_output=True, text=True, timeout=120,
                          cwd=cwd or data_dir.parent)


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("JUSHOSTIT_DB_POOL_SIZE", "abc", "valid integer"),
    ("JUSHOSTIT_TRUSTED_PROXIES", "nonsense", "'nonsense' is not an IP address or network"),
    ("JUSHOSTIT_TRUSTED_PROXIES", "10.0.0.0/8, 300.1.1.1", "'300.1.1.1' is not an IP address or network"),
    ("JUSHOSTIT_OIDC_PROVIDERS", "{not json", "not valid JSON"),
    ("DATABASE_URL", "not-a-url-canary", "not a database URL"),
])
def test_a_bad_setting_prints_one_clear_line_without_a_traceback(
    tmp_path: Path, setting: str, value: str, says: str
) -> None:
    data_dir = tmp_path / "data"

    result = run_cli("serve", data_dir=data_dir, **{setting: value})

    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"jushostit: invalid configuration {setting}: ") and says in lines[0], lines[0]
    assert "see docs/configuration.md" in lines[0]
    assert "canary" not in result.stderr  # values are not repeated (a URL may hold a password)
    assert result.stdout == ""
    assert not data_dir.exists(), "refused before anything started"


def test_the_cli_starts_without_deprecation_warnings(tmp_path: Path) -> None:
    # `serve` imports the whole application (authlib's OIDC client included) before it reads the settings; a
    # refused setting stops it right after, so its stderr holds all the import-time notices there are.
    result = run_cli("serve", data_dir=tmp_path / "data", JUSHOSTIT_DB_POOL_SIZE="abc")
    assert "Warning" not in result.stderr and "deprecated" not in result.stderr, result.stderr
    helped = run_cli("admin", "create", "--help", data_dir=tmp_path / "data")
    assert helped.returncode == 0 and helped.stderr == "", helped.stderr


def test_admin_create_refuses_a_data_dir_without_a_database_instead_of_creating_one(tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-the-servers"
    env: dict[str, str | None] = {"DATABASE_URL": None, "JUSHOSTIT_DATABASE_URL": None,
                                  "JUSHOSTIT_DATA_DIR": str(elsewhere)}
    for command in (["admin", "create", "--email", "admin@example.com", "--password", ADMIN_PASSWORD],
                    ["audit", "verify"], ["keys", "rotate"]):
        result = invoke(command, env=env)
        assert result.exit_code == 1, result.output
        assert f"there is no JusHostIt database in {elsewhere}" in result.stderr
        assert "--data-dir" in result.stderr and "Traceback" not in result.output
    assert not (elsewhere / "pg").exists(), "no second, empty database was created"


def test_the_admin_create_command_serve_prints_reaches_its_database(
    scratch_database_url: str, tmp_path: Path
) -> None:
    from jushostit.config import Settings
    from jushostit.server import first_admin_command

    served = Settings(data_dir=tmp_path / "served", database_url=scratch_database_url)
    printed = first_admin_command(served)
    assert printed.endswith("(with the same DATABASE_URL set)")
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    args = shlex.split(printed.split("  (")[0].replace("you@example.com", email))
    assert args[:3] == ["jushostit", "admin", "create"] and str((tmp_path / "served").resolve()) in args

    env = {**cli_env(scratch_database_url, tmp_path / "unused"), "JUSHOSTIT_DATA_DIR": None}
    result = invoke([*args[1:], "--password", ADMIN_PASSWORD], env=env)

    assert result.exit_code == 0, result.output
    assert admin_row(scratch_database_url, email) is not None
