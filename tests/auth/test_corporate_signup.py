"""Corporate sign-up: `POST /v1/auth/signup` with `corporate_ref` names a HubSpot deal, read from HubSpot's CRM
API (here a stand-in on its documented wire format, over real HTTP on loopback, called by the product's own
httpx client). A won deal with a contract end ahead makes a `prepaid` account carrying the deal and the end;
anything else is refused and stores nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from jushostit.models import Account, AuditEntry, BillingMode, EmailOutbox, User
from tests.billing.helpers import error_of
from tests.conftest import TEST_PASSWORD, asgi_client
from tests.hubspot_stand_in import (
    TOKEN,
    HubSpotServer,
    HubSpotStandIn,
    hubspot,
    hubspot_server,
    hubspot_settings,
)
from tests.stripe_stand_in import StripeServer
from tests.test_logs_no_secrets import everything_logged, log_capture

__all__ = ["hubspot", "hubspot_server", "log_capture"]  # fixtures

CONTRACT_END = "contract_end_date"


@pytest.fixture
async def corporate(app_factory, hubspot_server: HubSpotServer) -> Any:
    """A client of an app whose HubSpot is the stand-in."""
    async with asgi_client(app_factory(**hubspot_settings(hubspot_server))) as client:
        yield client


def _signup(deal_id: str, email: str | None = None) -> dict[str, Any]:
    return {"email": email or f"buyer-{uuid.uuid4().hex[:8]}@corp.example", "password": TEST_PASSWORD,
            "account_name": "Corp Ltd", "corporate_ref": deal_id}


async def _stored(session, email: str, deal_id: str) -> tuple[int, int, int]:
    """(users with the address, accounts with the deal, e-mails to the address)."""
    users = await session.scalar(select(func.count()).select_from(User).where(User.email == email))
    accounts = await session.scalar(select(func.count()).select_from(Account).where(Account.contract_ref == deal_id))
    emails = await session.scalar(select(func.count()).select_from(EmailOutbox).where(EmailOutbox.to_address == email))
    return users, accounts, emails


async def _account_with(session, deal_id: str) -> Account:
    account = await session.scalar(select(Account).where(Account.contract_ref == deal_id))
    assert account is not None
    return account


async def test_a_won_deal_makes_a_prepaid_account_with_the_deal_and_contract_end_audited_without_stripe(
    app_factory, session, hubspot: HubSpotStandIn, hubspot_server: HubSpotServer
) -> None:
    deal_id = hubspot.deal("closedwon", **{CONTRACT_END: "2031-06-30"})
    with StripeServer() as stripe_server:  # configured, so plain sign-ups would be billed by card
        application = app_factory(stripe_secret_key=SecretStr("sk_test_corporate"),
                                  stripe_api_base=stripe_server.base_url, **hubspot_settings(hubspot_server))
        async with asgi_client(application) as client:
            body = _signup(deal_id)
            response = await client.post("/v1/auth/signup", json=body)
            plain = await client.post("/v1/auth/signup", json={**body, "email": "plain@corp.example",
                                                                "corporate_ref": None})
    assert response.status_code == 202, response.text
    assert response.json() == plain.json()  # the same answer as any sign-up
    assert stripe_server.stand_in.requests == [] and stripe_server.stand_in.reads == []

    account = await _account_with(session, deal_id)
    # A date property: the contract runs through that day.
    assert account.billing_mode == BillingMode.prepaid
    assert account.contract_ends_at == datetime(2031, 7, 1, tzinfo=UTC)
    [asked] = hubspot.requests_to(f"/crm/v3/objects/deals/{deal_id}")
    assert asked.authorization == f"Bearer {TOKEN}"
    assert {"dealstage", "pipeline", CONTRACT_END} <= set(asked.query["properties"].split(","))
    created = await session.scalar(select(AuditEntry).where(AuditEntry.action == "account.created",
                                                            AuditEntry.target_id == str(account.id)))
    assert created is not None and created.after["billing_mode"] == "prepaid"
    assert (created.after["contract_ref"], created.after["contract_ends_at"]) == (deal_id, "2031-07-01T00:00:00+00:00")
    signed_up = await session.scalar(select(AuditEntry).where(AuditEntry.action == "user.signup",
                                                              AuditEntry.account_id == account.id))
    assert signed_up is not None and signed_up.after["corporate_ref"] == deal_id
    assert await _stored(session, body["email"], deal_id) == (1, 1, 1)  # the confirmation e-mail
    plain_account = await session.scalar(select(Account).where(Account.billing_email == "plain@corp.example"))
    assert plain_account is not None and plain_account.billing_mode == BillingMode.card


async def test_an_unknown_deal_is_refused_and_nothing_is_stored(corporate, session, hubspot) -> None:
    body = _signup("404404404")
    error = error_of(await corporate.post("/v1/auth/signup", json=body), 400, "unknown_corporate_ref")
    assert "404404404" in error["message"]
    assert len(hubspot.requests_to("/crm/v3/objects/deals/404404404")) == 1
    assert await _stored(session, body["email"], "404404404") == (0, 0, 0)


async def test_a_rate_limited_lookup_waits_the_retry_after_then_succeeds(corporate, session, hubspot) -> None:
    deal_id = hubspot.deal("closedwon", **{CONTRACT_END: "2031-01-31T17:00:00Z"})
    hubspot.rate_limited = ["1"]
    response = await corporate.post("/v1/auth/signup", json=_signup(deal_id))
    assert response.status_code == 202, response.text
    first, second = hubspot.requests_to(f"/crm/v3/objects/deals/{deal_id}")
    assert second.at - first.at >= 1.0  # HubSpot's Retry-After was waited out before asking again
    assert (await _account_with(session, deal_id)).contract_ends_at == datetime(2031, 1, 31, 17, tzinfo=UTC)


async def test_a_retry_after_beyond_the_bound_is_answered_503_at_once_with_it(corporate, session, hubspot) -> None:
    deal_id = hubspot.deal("closedwon", **{CONTRACT_END: "2031-01-31"})
    hubspot.rate_limited = ["30"]
    body = _signup(deal_id)
    response = await corporate.post("/v1/auth/signup", json=body)
    error = error_of(response, 503, "crm_unavailable")
    assert response.headers["Retry-After"] == "30" and error["details"] == {"retry_after": 30}
    assert len(hubspot.requests_to("/crm/v3/objects/deals/")) == 1  # not held for 30 s
    assert await _stored(session, body["email"], deal_id) == (0, 0, 0)


@pytest.mark.parametrize(("stage", "outcome"), [("closedlost", "lost"), ("contractsent", "open")])
async def test_lost_and_open_deals_are_refused(corporate, session, hubspot, stage, outcome) -> None:
    hubspot.pipeline("default", contractsent=(False, "0.9"), closedwon=(True, "1.0"), closedlost=(True, "0.0"))
    deal_id = hubspot.deal(stage, **{CONTRACT_END: "2031-01-31"})
    body = _signup(deal_id)
    error = error_of(await corporate.post("/v1/auth/signup", json=body), 409, "corporate_ref_not_won")
    assert error["details"] == {"outcome": outcome}
    assert await _stored(session, body["email"], deal_id) == (0, 0, 0)


async def test_a_custom_pipeline_stage_is_won_when_its_metadata_says_closed_at_probability_one(
    corporate, session, hubspot
) -> None:
    hubspot.pipeline("renewals", signed=(True, "1.0"), walked_away=(True, "0.0"), negotiating=(False, "0.6"))
    won = hubspot.deal("signed", pipeline="renewals", **{CONTRACT_END: "2031-01-31"})
    lost = hubspot.deal("walked_away", pipeline="renewals", **{CONTRACT_END: "2031-01-31"})
    assert (await corporate.post("/v1/auth/signup", json=_signup(won))).status_code == 202
    assert (await _account_with(session, won)).billing_mode == BillingMode.prepaid
    error = error_of(await corporate.post("/v1/auth/signup", json=_signup(lost)), 409, "corporate_ref_not_won")
    assert error["details"] == {"outcome": "lost"}
    assert len(hubspot.requests_to("/crm/v3/pipelines/deals/renewals")) == 2


async def test_a_won_deal_without_a_contract_end_or_with_one_past_is_refused(corporate, session, hubspot) -> None:
    endless = hubspot.deal("closedwon")
    ended = hubspot.deal("closedwon", **{CONTRACT_END: "2020-12-31"})
    error = error_of(await corporate.post("/v1/auth/signup", json=_signup(endless)), 409,
                     "corporate_ref_without_contract_end")
    assert error["details"] == {"property": CONTRACT_END}
    error_of(await corporate.post("/v1/auth/signup", json=_signup(ended)), 409, "corporate_contract_ended")
    assert await session.scalar(select(func.count()).select_from(Account).where(
        Account.contract_ref.in_([endless, ended]))) == 0


async def test_a_deal_that_made_an_account_makes_no_other(corporate, session, hubspot) -> None:
    deal_id = hubspot.deal("closedwon", **{CONTRACT_END: "2031-01-31"})
    assert (await corporate.post("/v1/auth/signup", json=_signup(deal_id))).status_code == 202
    second = _signup(deal_id)
    error_of(await corporate.post("/v1/auth/signup", json=second), 409, "corporate_ref_used")
    assert await _stored(session, second["email"], deal_id) == (0, 1, 0)


async def test_a_taken_address_with_a_deal_answers_the_same_and_leaves_the_deal_unused(
    corporate, session, hubspot
) -> None:
    taken = _signup("0", email="taken@corp.example") | {"corporate_ref": None}
    assert (await corporate.post("/v1/auth/signup", json=taken)).status_code == 202
    deal_id = hubspot.deal("closedwon", **{CONTRACT_END: "2031-01-31"})
    again = await corporate.post("/v1/auth/signup", json=_signup(deal_id, email="taken@corp.example"))
    fresh = await corporate.post("/v1/auth/signup", json=_signup(deal_id))
    assert (again.status_code, again.json()) == (fresh.status_code, fresh.json()) == (202, fresh.json())
    told = await session.scalar(select(EmailOutbox).where(EmailOutbox.to_address == "taken@corp.example",
                                                          EmailOutbox.template == "signup_existing"))
    assert told is not None
    account = await _account_with(session, deal_id)  # the deal went to the fresh address only
    assert account.billing_email != "taken@corp.example"


async def test_hubspot_down_or_unreachable_is_a_503_and_nothing_is_stored(
    app_factory, corporate, session, hubspot, hubspot_server
) -> None:
    deal_id = hubspot.deal("closedwon", **{CONTRACT_END: "2031-01-31"})
    hubspot.outage = 503
    body = _signup(deal_id)
    error_of(await corporate.post("/v1/auth/signup", json=body), 503, "crm_unavailable")
    with HubSpotServer() as gone:
        unreachable = {**hubspot_settings(hubspot_server), "hubspot_api_base": gone.base_url}
    async with asgi_client(app_factory(**unreachable)) as client:  # nothing listens there any more
        error_of(await client.post("/v1/auth/signup", json=body), 503, "crm_unavailable")
    assert await _stored(session, body["email"], deal_id) == (0, 0, 0)


async def test_a_refused_token_is_a_503_and_no_token_reaches_the_logs(
    app_factory, session, hubspot, hubspot_server, log_capture
) -> None:
    capfd, caplog = log_capture
    canary = "pat-eu1-canary-" + uuid.uuid4().hex
    deal_id = hubspot.deal("closedwon", **{CONTRACT_END: "2031-01-31"})
    async with asgi_client(app_factory(**hubspot_settings(hubspot_server, token=canary))) as client:
        error_of(await client.post("/v1/auth/signup", json=_signup(deal_id)), 503, "crm_unavailable")
    async with asgi_client(app_factory(**hubspot_settings(hubspot_server))) as client:
        hubspot.rate_limited = ["30"]
        error_of(await client.post("/v1/auth/signup", json=_signup(deal_id)), 503, "crm_unavailable")
        hubspot.outage = 500
        error_of(await client.post("/v1/auth/signup", json=_signup(deal_id)), 503, "crm_unavailable")
    assert hubspot.seen[0].authorization == f"Bearer {canary}"  # it was sent, and answered 401
    logged = everything_logged(capfd, caplog)
    assert "hubspot.refused" in logged
    assert canary not in logged and TOKEN not in logged


async def test_a_corporate_signup_without_hubspot_configured_is_refused(client: httpx.AsyncClient, session) -> None:
    body = _signup("123456")
    error_of(await client.post("/v1/auth/signup", json=body), 409, "corporate_contracts_not_configured")
    assert await _stored(session, body["email"], "123456") == (0, 0, 0)


@pytest.mark.parametrize("ref", ["../owners", "12a", "", "1" * 21])
async def test_a_corporate_ref_is_a_deal_id_and_nothing_else(corporate, hubspot, ref) -> None:
    error_of(await corporate.post("/v1/auth/signup", json=_signup(ref)), 422, "validation_error")
    assert hubspot.seen == []  # refused before anything reached HubSpot
