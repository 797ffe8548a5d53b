"""Issue 4's "Done means", over real HTTP against the real `jushostit serve` on the embedded defaults:
signup → checkout free → order static-site → running and serving → admin suspends → 503 and stopped →
unsuspend → back with its data → delete → 404 and the data directory gone."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.test_serve import FIRST_START_BUDGET, PASSWORD, Serve, login, signup, wait_for

pytestmark = pytest.mark.e2e

STATUS_BUDGET = 10.0  # seconds from the action to the observed effect


def test_customer_lifecycle_on_the_local_runtime(serve: Serve) -> None:
    serve.start(FIRST_START_BUDGET)
    base = serve.base_url
    customer = signup(serve, f"owner-{uuid.uuid4().hex[:8]}@example.com")
    headers = {"Authorization": f"Bearer {customer['access_token']}"}
    account_id = customer["account"]["id"]

    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    created = serve.run("admin", "create", "--email", admin_email, "--password", PASSWORD)
    assert created.returncode == 0, created.stderr
    admin = {"Authorization": f"Bearer {login(base, admin_email)}"}

    checkout = httpx.post(f"{base}/v1/accounts/{account_id}/checkout", json={"plan": "free"}, headers=headers)
    assert checkout.status_code == 201, checkout.text
    order = httpx.post(f"{base}/v1/accounts/{account_id}/instances", json={"template": "static-site", "name": "site"},
                       headers=headers)
    assert order.status_code == 201, order.text
    instance = order.json()
    url = instance["url"]
    assert url == f"http://{instance['slug']}.localhost:{serve.port}/"
    site = httpx.Client(base_url=base, headers={"Host": f"{instance['slug']}.localhost:{serve.port}"}, timeout=10)

    def status() -> str:
        return httpx.get(f"{base}/v1/instances/{instance['id']}", headers=headers).json()["status"]

    wait_for(lambda: status() == "running", STATUS_BUDGET, "the instance to be running")
    page = site.get("/")
    assert page.status_code == 200 and "<h1>site</h1>" in page.text

    data_dir = serve.data_dir / "instances" / account_id / instance["id"] / "data"
    (data_dir / "customer.txt").write_text("kept across suspension")

    suspend = httpx.post(f"{base}/v1/admin/accounts/{account_id}/suspend", json={"reason": "admin", "note": "e2e"},
                         headers=admin)
    assert suspend.status_code == 200, suspend.text
    wait_for(lambda: status() == "stopped", STATUS_BUDGET, "the instance to be stopped")
    suspended = site.get("/")
    assert suspended.status_code == 503 and "suspended" in suspended.text

    unsuspend = httpx.post(f"{base}/v1/admin/accounts/{account_id}/unsuspend", json={"reason": "admin"}, headers=admin)
    assert unsuspend.status_code == 200, unsuspend.text
    wait_for(lambda: status() == "running", STATUS_BUDGET, "the instance to run again")
    assert site.get("/customer.txt").text == "kept across suspension"
    assert "<h1>site</h1>" in site.get("/").text

    deleted = httpx.delete(f"{base}/v1/instances/{instance['id']}", headers=headers)
    assert deleted.status_code == 202, deleted.text
    wait_for(lambda: site.get("/").status_code == 404, STATUS_BUDGET, "the URL to answer 404")
    wait_for(lambda: not data_dir.exists(), STATUS_BUDGET, "the data directory to be removed")
    assert httpx.get(f"{base}/v1/instances/{instance['id']}", headers=headers).status_code == 404
