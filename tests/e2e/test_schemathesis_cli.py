"""The schemathesis CLI against the real `jushostit serve`, over HTTP, with every check it has (issue 7 §8).

Unlike tests/test_schemathesis.py (the library, in-process, inside a rolled-back transaction), this is what a
client of the API meets: the served /openapi.json, the real middleware, commits and error handling. The caller
is a platform admin who owns an account, through an API key holding every scope (a key, not a session, so a
fuzzed logout cannot end the run's credentials); every `account_id` in a path is that account's, so account
routes reach their logic instead of a 404. schemathesis must exit 0: no 5xx, no undocumented status code,
content type or header, no response outside its schema, no invalid request accepted.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from jushostit.auth.scopes import Scope
from tests.e2e.test_serve import FIRST_START_BUDGET, PASSWORD, Serve, login, signup

pytestmark = pytest.mark.e2e

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Fixed seeds, so a failure reproduces; several, so one lucky draw cannot hide a bug. The coverage phase (the
# boundary values: one past each maxLength, minimum and maximum, each missing required field) does not depend on
# the seed, so it runs once; fuzzing and the stateful sequences run with every seed.
SEEDS = (1, 2, 3)
MAX_EXAMPLES = 5  # per operation: the whole test stays under three minutes on two cores
RUN_TIMEOUT = 240.0

# positive_data_acceptance demands a 2xx for every schema-valid request, but validity here also depends on what
# JSON Schema cannot state, each refused with a documented 4xx: the password policy (its length is a setting,
# common passwords), a template's cross-field rules (a probe is http or tcp, the default tier is a tier), special-
# use email domains (.test), opaque pagination cursors, NUL characters (PostgreSQL cannot store them) and strict
# integers (JSON Schema counts 1.0 as an integer; request models refuse it on purpose, see test_api_contract.py).
NOT_APPLICABLE = "positive_data_acceptance"


def test_schemathesis_cli_finds_no_server_error_and_no_schema_violation(serve: Serve) -> None:
    # Fuzzing must reach sign-in and sign-up, not only their rate limiter (its 429 is tested elsewhere).
    serve.extra_env = {"JUSHOSTIT_AUTH_RATE_LIMIT": "100000/minute"}
    serve.start(FIRST_START_BUDGET)
    base = serve.base_url
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    account_id = signup(serve, email)["account"]["id"]
    promoted = serve.run("admin", "create", "--email", email, "--password", PASSWORD)
    assert promoted.returncode == 0, promoted.stderr
    key = httpx.post(
        f"{base}/v1/me/api-keys",
        json={"name": "schemathesis", "scopes": [scope.value for scope in Scope]},
        headers={"Authorization": f"Bearer {login(base, email)}"},
        timeout=30,
    )
    assert key.status_code == 201, key.text
    config = serve.data_dir.parent / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.account_id" = "{account_id}"\n')

    began = time.monotonic()
    for seed in SEEDS:
        phases = "coverage,fuzzing,stateful" if seed == SEEDS[0] else "fuzzing,stateful"
        run = subprocess.run(
            [
                str(SCHEMATHESIS), "--config-file", str(config), "run", f"{base}/openapi.json",
                "--phases", phases, "--checks", "all", "--exclude-checks", NOT_APPLICABLE,
                "-H", f"Authorization: Bearer {key.json()['key']}",
                "--max-examples", str(MAX_EXAMPLES), "--seed", str(seed), "--workers", "1",
                "--generation-database", "none", "--no-color",
            ],
            capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=serve.data_dir.parent,
        )
        assert run.returncode == 0, (
            f"schemathesis --seed {seed} --phases {phases} failed:\n{run.stdout}\n{run.stderr}\n{serve.logs()}"
        )
    print(f"\nschemathesis, seeds {SEEDS}: {time.monotonic() - began:.0f} s")
