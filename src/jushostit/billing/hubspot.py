"""HubSpot's CRM, read for prepaid contracts: a corporate sign-up names a deal, and the deal says whether it was
won and when the contract ends (a deal property, `JUSHOSTIT_HUBSPOT_CONTRACT_END_PROPERTY`).

CRM API v3 with a private app's token (`Authorization: Bearer`): `GET /crm/v3/objects/deals/{id}?properties=…`,
and for a stage of a custom pipeline `GET /crm/v3/pipelines/deals/{pipeline}`, whose stages say in their metadata
whether they are closed and with what probability (won: closed at probability 1.0). A 429 is waited out as its
`Retry-After` says, a few times and for a bounded total; past that bound, and on a 5xx, a network failure or a
refused token, the caller gets a 503 to retry later. Nothing here touches the database: a sign-up fetches the
deal before it opens a transaction.
"""

from __future__ import annotations

import asyncio
import enum
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from jushostit.config import Settings
from jushostit.kit.errors import ServiceUnavailable

log = structlog.get_logger(__name__)

# The default pipeline's closed stages have these ids in every HubSpot portal; other stages (custom pipelines,
# stages added to the default one) are read from the pipelines API.
DEFAULT_WON_STAGE = "closedwon"
DEFAULT_LOST_STAGE = "closedlost"
DEAL_PROPERTIES = ("dealname", "dealstage", "pipeline", "amount", "closedate")

# A sign-up waits for HubSpot's rate limit at most this many attempts and this long in all; a longer wait is
# answered 503 with HubSpot's Retry-After, rather than holding the request.
MAX_ATTEMPTS = 3
MAX_TOTAL_WAIT_SECONDS = 5.0
# A 429 without a usable Retry-After: HubSpot's shortest window is a second.
DEFAULT_RETRY_AFTER_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 5.0


class DealOutcome(enum.StrEnum):
    won = "won"
    lost = "lost"
    open = "open"


@dataclass(frozen=True)
class Deal:
    id: str
    name: str | None
    pipeline: str
    stage: str
    outcome: DealOutcome
    contract_ends_at: datetime | None  # None: the property is empty (or unreadable)


class CrmUnavailable(ServiceUnavailable):
    """HubSpot did not answer usably: nothing was recorded, the same request may be sent again later."""

    code = "crm_unavailable"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message, details={"retry_after": retry_after} if retry_after is not None else None)
        if retry_after is not None:
            self.headers = {"Retry-After": str(retry_after)}


class HubSpotCrm:
    def __init__(self, token: str, api_base: str, contract_end_property: str) -> None:
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._api_base = api_base
        self.contract_end_property = contract_end_property

    async def deal(self, deal_id: str) -> Deal | None:
        """The deal as HubSpot holds it now; None when HubSpot has no such deal."""
        async with httpx.AsyncClient(base_url=self._api_base, headers=self._headers,
                                     timeout=REQUEST_TIMEOUT_SECONDS) as client:
            properties = ",".join((*DEAL_PROPERTIES, self.contract_end_property))
            found = await _get(client, f"/crm/v3/objects/deals/{quote(deal_id, safe='')}", {"properties": properties})
            if found is None:
                return None
            values = found.get("properties") or {}
            pipeline = str(values.get("pipeline") or "default")
            stage = str(values.get("dealstage") or "")
            return Deal(
                id=str(found.get("id") or deal_id), name=values.get("dealname"), pipeline=pipeline, stage=stage,
                outcome=await _outcome(client, pipeline, stage),
                contract_ends_at=contract_end(values.get(self.contract_end_property)),
            )


def hubspot_crm(settings: Settings) -> HubSpotCrm | None:
    """None when HubSpot is not configured (no token)."""
    if settings.hubspot_token is None or not settings.hubspot_configured:
        return None
    return HubSpotCrm(settings.hubspot_token.get_secret_value(), settings.hubspot_api_base,
                      settings.hubspot_contract_end_property)


async def _outcome(client: httpx.AsyncClient, pipeline: str, stage: str) -> DealOutcome:
    if stage == DEFAULT_WON_STAGE:
        return DealOutcome.won
    if stage == DEFAULT_LOST_STAGE:
        return DealOutcome.lost
    found = await _get(client, f"/crm/v3/pipelines/deals/{quote(pipeline, safe='')}")
    stages = found.get("stages") if found else None
    for candidate in stages if isinstance(stages, list) else []:
        if isinstance(candidate, dict) and candidate.get("id") == stage:
            metadata = candidate.get("metadata") or {}
            if str(metadata.get("isClosed")).lower() != "true":
                return DealOutcome.open
            return DealOutcome.won if _probability(metadata.get("probability")) >= 1.0 else DealOutcome.lost
    return DealOutcome.open  # a stage its pipeline does not list is no proof of a won deal


def _probability(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def contract_end(value: Any) -> datetime | None:
    """The contract end a deal property holds: a date (the contract runs through that day, so it ends at the next
    midnight UTC), a date-time (that instant) or Unix milliseconds (HubSpot's stored form of both)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        if len(text) == len("2030-01-31"):
            return datetime.combine(date.fromisoformat(text) + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        log.warning("hubspot.contract_end_unreadable")
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _get(client: httpx.AsyncClient, path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
    """GET a CRM object: its JSON, or None on 404. A 429 is retried after its Retry-After within the bounds."""
    waited = 0.0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            response = await client.get(path, params=params)
        except httpx.HTTPError as error:
            log.warning("hubspot.unreachable", error=type(error).__name__)
            raise CrmUnavailable("HubSpot could not be reached; try again in a moment") from error
        if response.status_code == 404:
            return None
        if response.status_code == 429:
            delay = _retry_after(response)
            if attempt == MAX_ATTEMPTS or waited + delay > MAX_TOTAL_WAIT_SECONDS:
                log.warning("hubspot.rate_limited", retry_after=delay, attempts=attempt)
                raise CrmUnavailable("HubSpot is busy; try again later", retry_after=max(1, math.ceil(delay)))
            await asyncio.sleep(delay)  # HubSpot's own Retry-After, within MAX_TOTAL_WAIT_SECONDS
            waited += delay
            continue
        if response.status_code != 200:
            # 401/403: the token is wrong or lacks the deals scope (an operator's to fix); 5xx: HubSpot's trouble.
            log.error("hubspot.refused", status=response.status_code, category=_category(response))
            raise CrmUnavailable("HubSpot did not answer usably; try again later")
        try:
            body = response.json()
        except ValueError as error:
            log.error("hubspot.not_json", status=response.status_code)
            raise CrmUnavailable("HubSpot did not answer usably; try again later") from error
        if not isinstance(body, dict):
            raise CrmUnavailable("HubSpot did not answer usably; try again later")
        return body
    raise AssertionError("unreachable: the last attempt returns or raises")


def _retry_after(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return DEFAULT_RETRY_AFTER_SECONDS
    return seconds if math.isfinite(seconds) and seconds >= 0 else DEFAULT_RETRY_AFTER_SECONDS


def _category(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("category")) if isinstance(body, dict) and body.get("category") else None
