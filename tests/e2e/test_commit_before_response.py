"""A write is committed before its response leaves the server (the in-process, deterministic companion of the
real-HTTP checks in test_serve.py, where signup → immediate login depends on it).

FastAPI runs the exit of a `yield` dependency after the response has been sent unless it is declared with
scope="function"; the request session must be, or a client can be told 201 about a row that a crash (or its
next request, racing the commit) does not see.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from tests.conftest import TEST_PASSWORD


@pytest.fixture
def commits() -> Iterator[list[str]]:
    order: list[str] = []

    def committed(_session: Session) -> None:
        order.append("commit")

    event.listen(Session, "after_commit", committed)
    try:
        yield order
    finally:
        event.remove(Session, "after_commit", committed)


async def test_the_request_transaction_commits_before_the_response_starts(
    app: Any, commits: list[str]
) -> None:
    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def send_and_record(message: Any) -> None:
            if message["type"] == "http.response.start":
                commits.append(f"response {message['status']}")
            await send(message)

        await app(scope, receive, send_and_record)

    transport = httpx.ASGITransport(app=recording, client=("203.0.113.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post(
            "/v1/auth/signup",
            json={"email": f"order-{uuid.uuid4().hex[:8]}@example.com", "password": TEST_PASSWORD,
                  "account_name": "Order"},
        )

    assert response.status_code == 202, response.text
    assert "commit" in commits
    assert commits.index("commit") < commits.index("response 202"), commits
