"""Small helpers shared by the billing tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tests.conftest import TEST_PASSWORD


async def login(client, who) -> dict[str, str]:
    """Fresh access token (inside a travelled clock, the signup's token has expired)."""
    response = await client.post("/v1/auth/login", json={"email": who.email, "password": TEST_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def error_of(response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


async def reconcile_jobs(session, account_id: str) -> list[Any]:
    """The reconcile jobs procrastinate holds for the account (deferred after the request's commit)."""
    rows = await session.execute(
        text(
            "SELECT task_name, args, queueing_lock, lock, status FROM procrastinate_jobs "
            "WHERE task_name = 'account.reconcile' AND args->>'account_id' = :account_id"
        ),
        {"account_id": account_id},
    )
    return list(rows.all())
