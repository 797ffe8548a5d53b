"""The first hour on the embedded defaults: the command `serve` prints to create the first platform admin works
as printed, from another directory and without the data dir in the environment, on serve's own database."""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_serve import (
    COMMAND_TIMEOUT,
    FIRST_START_BUDGET,
    JUSHOSTIT,
    Serve,
    base_env,
    login,
    wait_for,
)

pytestmark = pytest.mark.e2e

PASSWORD = "the first admin's passphrase"


def test_the_admin_create_command_serve_prints_works_as_printed(serve: Serve) -> None:
    serve.start(FIRST_START_BUDGET)
    hint = wait_for(lambda: re.search(r"Create the first platform admin:\s+(.+)", serve.stdout()), 10,
                    "the first-admin hint on stdout")
    printed = hint.group(1).strip()
    email = f"first-{uuid.uuid4().hex[:8]}@example.com"
    args = shlex.split(printed.replace("you@example.com", email))
    assert args[0] == "jushostit"

    env = {k: v for k, v in base_env(serve.data_dir).items() if k != "JUSHOSTIT_DATA_DIR"}  # a fresh terminal
    with tempfile.TemporaryDirectory(prefix="jushostit-elsewhere-") as elsewhere:
        created = subprocess.run(
            [str(JUSHOSTIT), *args[1:], "--password", PASSWORD], env=env, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT, cwd=elsewhere,
        )
        assert created.returncode == 0, created.stderr
        assert f"Platform admin created: {email}" in created.stdout
        assert not (Path(elsewhere) / "var").exists(), "no second database next to where it was run"

    token = login(serve.base_url, email, PASSWORD)
    accounts = httpx.get(f"{serve.base_url}/v1/admin/accounts", headers={"Authorization": f"Bearer {token}"},
                         timeout=30)
    assert accounts.status_code == 200, accounts.text
    assert "Warning" not in serve.stderr_path.read_text(), "nothing deprecated is printed at start"
