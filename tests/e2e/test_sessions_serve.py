"""Browser sessions on the real `jushostit serve` (embedded defaults, Debian's Chromium): a customer with a
session plan and credits orders a Chromium pool, gets a CDP URL, drives a real page served on loopback through it,
ends the session and sees the credit and the duration; when serve stops, no browser is left."""

from __future__ import annotations

import json
import shutil
import signal
import uuid
from typing import Any

import httpx
import psutil
import pytest
from websockets.sync.client import connect

from tests.e2e.test_serve import FIRST_START_BUDGET, PASSWORD, Serve, login, signup, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("chromium") is None,
                                                  reason="Debian's chromium is not installed (.ci/run installs it)")]

STATUS_BUDGET = 60.0


def browsers_under(serve: Serve) -> list[psutil.Process]:
    mark = f"--user-data-dir={serve.data_dir.resolve()}"
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(argument.startswith(mark) for argument in process.info["cmdline"] or []):
            found.append(process)
    return found


def test_a_customer_drives_a_page_through_a_session_of_a_running_serve_and_sees_credit_and_duration(
    serve: Serve,
) -> None:
    serve.start(FIRST_START_BUDGET)
    base = serve.base_url
    customer = signup(serve, f"browser-{uuid.uuid4().hex[:8]}@example.com")
    headers = {"Authorization": f"Bearer {customer['access_token']}"}
    account_id = customer["account"]["id"]
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    assert serve.run("admin", "create", "--email", admin_email, "--password", PASSWORD).returncode == 0
    admin = {"Authorization": f"Bearer {login(base, admin_email)}"}

    # The starter plan (two sessions at once, 30 minutes each), paid off-platform, and two credits.
    assert httpx.post(f"{base}/v1/admin/accounts/{account_id}/billing-mode", json={"billing_mode": "invoice"},
                     headers=admin, timeout=30).status_code == 200
    pending = httpx.post(f"{base}/v1/accounts/{account_id}/checkout", json={"plan": "starter"}, headers=headers,
                         timeout=30).json()["subscription"]
    assert httpx.post(f"{base}/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=admin,
                      timeout=30).status_code == 200
    granted = httpx.post(f"{base}/v1/admin/accounts/{account_id}/credits/grants", headers=admin, timeout=30,
                         json={"amount": 2, "reason": "e2e"})
    assert granted.status_code == 201, granted.text

    pool = httpx.post(f"{base}/v1/accounts/{account_id}/instances", json={"template": "chromium", "name": "browsers"},
                      headers=headers, timeout=30)
    assert pool.status_code == 201, pool.text

    def status() -> str:
        return str(httpx.get(f"{base}/v1/instances/{pool.json()['id']}", headers=headers, timeout=30).json()["status"])

    wait_for(lambda: status() == "running", STATUS_BUDGET, "the pool to run")
    started = httpx.post(f"{base}/v1/accounts/{account_id}/sessions", json={}, headers=headers, timeout=30)
    assert started.status_code == 201, started.text
    session = started.json()
    assert session["credits_left"] == 1 and session["cdp_url"].startswith(f"ws://127.0.0.1:{serve.port}/")

    counter = iter(range(1, 1000))

    def cdp(connection: Any, method: str, params: dict[str, Any], target: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"id": next(counter), "method": method, "params": params}
        if target:
            message["sessionId"] = target
        connection.send(json.dumps(message))
        while True:
            answer = json.loads(connection.recv(timeout=20))
            if answer.get("id") == message["id"]:
                assert "error" not in answer, answer
                return dict(answer["result"])

    page = f"{base}/docs"  # a page this server serves on loopback
    with connect(session["cdp_url"], max_size=None) as connection:
        target = cdp(connection, "Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = cdp(connection, "Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp(connection, "Page.navigate", {"url": page}, attached)

        def evaluate(expression: str) -> Any:
            result = cdp(connection, "Runtime.evaluate", {"expression": expression, "returnByValue": True}, attached)
            return result["result"].get("value")

        wait_for(lambda: evaluate("document.readyState") == "complete", 30, "the page to load")
        assert evaluate("location.href") == page and evaluate("6 * 7") == 42
        assert "JusHostIt" in evaluate("document.title")

    ended = httpx.post(f"{base}/v1/sessions/{session['id']}/end", headers=headers, timeout=30)
    assert ended.status_code == 200, ended.text
    assert (ended.json()["end_reason"], ended.json()["credits"]) == ("ended", 1)
    assert float(ended.json()["duration_seconds"]) > 0
    credits = httpx.get(f"{base}/v1/accounts/{account_id}/credits", headers=headers, timeout=30).json()
    assert credits["balance"] == 1

    assert browsers_under(serve)  # the pool's warm browsers
    assert serve.stop(signal.SIGTERM) == 0
    assert browsers_under(serve) == [], "serve stopped: no browser of its pools is left"
