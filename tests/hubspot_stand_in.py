"""A HubSpot CRM stand-in on HubSpot's documented wire format (CRM API v3), served over real HTTP on loopback so
the product's own httpx client talks to it: deals by id (`GET /crm/v3/objects/deals/{id}?properties=…`), deal
pipelines (`GET /crm/v3/pipelines/deals/{id}`), a private app token checked on every request (401 otherwise),
404 `OBJECT_NOT_FOUND`, 429 `RATE_LIMITS` with `Retry-After` in seconds, and an outage (5xx). It records every
request with the monotonic time it arrived, so a test can read what was asked and when."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse

from tests.loopback_server import LoopbackServer

TOKEN = "pat-eu1-" + uuid.uuid4().hex  # a private app's access token, as HubSpot issues them
CREATED = "2026-01-05T09:30:00.000Z"


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when it arrived
    path: str
    query: dict[str, str]
    authorization: str | None


def _error(status: int, category: str, message: str, **extra: Any) -> JSONResponse:
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category, **extra}
    return JSONResponse(body, status_code=status)


@dataclass
class HubSpotStandIn:
    deals: dict[str, dict[str, str | None]] = field(default_factory=dict)  # id → properties
    pipelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # id → stages
    seen: list[Seen] = field(default_factory=list)
    rate_limited: list[str] = field(default_factory=list)  # Retry-After of the next 429s, one request each
    outage: int | None = None  # answer every request with this status (HubSpot down)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(9_000_000_001))

    def deal(self, stage: str = "closedwon", pipeline: str = "default", **properties: str | None) -> str:
        """A deal HubSpot holds (its id): `dealstage`, `pipeline` and any other property, e.g. the contract end."""
        deal_id = str(next(self._ids))
        self.deals[deal_id] = {"dealname": f"Deal {deal_id}", "dealstage": stage, "pipeline": pipeline,
                               "amount": "24000", "closedate": "2026-01-20T12:00:00Z", **properties}
        return deal_id

    def pipeline(self, pipeline_id: str, **stages: tuple[bool, str]) -> None:
        """A custom pipeline: stage id → (is closed, probability), as HubSpot's metadata writes them (strings)."""
        self.pipelines[pipeline_id] = [
            {"id": stage_id, "label": stage_id.title(), "displayOrder": order, "archived": False,
             "createdAt": CREATED, "updatedAt": CREATED,
             "metadata": {"isClosed": "true" if closed else "false", "probability": probability}}
            for order, (stage_id, (closed, probability)) in enumerate(stages.items())
        ]

    def requests_to(self, path_start: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.startswith(path_start)]

    def answer(self, path: str, query: dict[str, str], authorization: str | None) -> JSONResponse:
        self.seen.append(Seen(time.monotonic(), path, query, authorization))
        if self.outage is not None:
            return _error(self.outage, "INTERNAL_ERROR", "Internal error")
        if authorization != f"Bearer {TOKEN}":
            return _error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
        if self.rate_limited:
            retry_after = self.rate_limited.pop(0)
            response = _error(429, "RATE_LIMITS", "You have reached your ten_secondly_rolling limit.",
                              errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING")
            response.headers["Retry-After"] = retry_after
            return response
        parts = path.strip("/").split("/")
        if parts[:4] == ["crm", "v3", "objects", "deals"] and len(parts) == 5:
            return self._deal(parts[4], query)
        if parts[:4] == ["crm", "v3", "pipelines", "deals"] and len(parts) == 5 and parts[4] in self.pipelines:
            return JSONResponse({"id": parts[4], "label": parts[4].title(), "displayOrder": 1, "archived": False,
                                 "createdAt": CREATED, "updatedAt": CREATED, "stages": self.pipelines[parts[4]]})
        return _error(404, "OBJECT_NOT_FOUND", "Object not found.")

    def _deal(self, deal_id: str, query: dict[str, str]) -> JSONResponse:
        if deal_id not in self.deals:
            return _error(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.",
                          context={"id": [deal_id]})
        held = self.deals[deal_id]
        # HubSpot answers the properties asked for (null when empty) and a few it always adds.
        asked = [name for name in query.get("properties", "").split(",") if name]
        properties = {name: held.get(name) for name in asked}
        properties |= {"hs_object_id": deal_id, "createdate": CREATED, "hs_lastmodifieddate": CREATED}
        return JSONResponse({"id": deal_id, "properties": properties, "createdAt": CREATED, "updatedAt": CREATED,
                             "archived": False})


class HubSpotServer(LoopbackServer):
    def __init__(self) -> None:
        self.stand_in = HubSpotStandIn()
        super().__init__()

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        answer = self.stand_in.answer(request.url.path, dict(request.query_params),
                                      request.headers.get("authorization"))
        await answer(scope, receive, send)


@pytest.fixture(scope="session")
def hubspot_server() -> Iterator[HubSpotServer]:
    with HubSpotServer() as server:
        yield server


@pytest.fixture
def hubspot(hubspot_server: HubSpotServer) -> HubSpotStandIn:
    """What HubSpot holds for this test (the server is shared; its state is the test's own)."""
    hubspot_server.stand_in = HubSpotStandIn()
    return hubspot_server.stand_in


def hubspot_settings(server: HubSpotServer, token: str = TOKEN) -> dict[str, Any]:
    """The settings that point the product's HubSpot client at the stand-in, with a private app token."""
    return {"hubspot_token": SecretStr(token), "hubspot_api_base": server.base_url}
