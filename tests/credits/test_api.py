"""The credits routes: owners and admins of the account read it, other tenants get 404; platform admins grant,
debit and refund, each change audited in its transaction; an overdraft is 409 and changes nothing."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from jushostit.models import AuditEntry, Membership, Role
from tests.billing.helpers import error_of
from tests.credits.helpers import assert_ledger_agrees, entries_of


def admin_url(account_id: str, what: str) -> str:
    return f"/v1/admin/accounts/{account_id}/credits/{what}"


async def test_owners_read_credits_and_another_tenant_gets_404(client, session, signup, admin) -> None:
    operator = await admin()
    owner, stranger, member = await signup(), await signup(), await signup()
    session.add(Membership(account_id=uuid.UUID(owner.account_id), user_id=uuid.UUID(member.user_id), role=Role.member))
    await session.flush()
    granted = await client.post(admin_url(owner.account_id, "grants"), json={"amount": 7, "reason": "welcome"},
                                headers=operator.headers)
    assert granted.status_code == 201, granted.text

    mine = await client.get(f"/v1/accounts/{owner.account_id}/credits", headers=owner.headers)
    assert mine.status_code == 200, mine.text
    assert mine.json()["balance"] == 7 and [g["remaining"] for g in mine.json()["grants"]] == [7]
    for path in ("credits", "credits/entries"):
        error_of(await client.get(f"/v1/accounts/{owner.account_id}/{path}", headers=stranger.headers), 404)
        error_of(await client.get(f"/v1/accounts/{uuid.uuid4()}/{path}", headers=stranger.headers), 404)
        # Like billing: plain members do not see it.
        error_of(await client.get(f"/v1/accounts/{owner.account_id}/{path}", headers=member.headers), 403,
                 "insufficient_role")


async def test_entries_are_listed_newest_first_page_by_page(client, signup, admin) -> None:
    operator = await admin()
    owner = await signup()
    for amount in (1, 2, 3):
        response = await client.post(admin_url(owner.account_id, "grants"), json={"amount": amount, "reason": "x"},
                                     headers=operator.headers)
        assert response.status_code == 201, response.text
    url = f"/v1/accounts/{owner.account_id}/credits/entries"
    first = (await client.get(url, params={"limit": 2}, headers=owner.headers)).json()
    assert [e["delta"] for e in first["items"]] == [3, 2] and first["next_cursor"]
    second = (await client.get(url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=owner.headers)).json()
    assert [(e["delta"], e["balance_after"]) for e in second["items"]] == [(1, 1)]
    assert second["next_cursor"] is None


async def test_admin_grants_debits_and_refunds_each_audited_and_repeatable_by_key(client, session, signup,
                                                                                  admin) -> None:
    operator = await admin()
    owner = await signup()
    keyed = {**operator.headers, "Idempotency-Key": "grant-welcome"}
    body = {"amount": 100, "priority": 3, "expires_at": "2099-01-01T00:00:00Z", "reason": "welcome",
            "reference": "ticket 42"}
    granted = await client.post(admin_url(owner.account_id, "grants"), json=body, headers=keyed)
    assert granted.status_code == 201, granted.text
    replay = await client.post(admin_url(owner.account_id, "grants"), json=body, headers=keyed)
    assert replay.content == granted.content and replay.headers["idempotent-replayed"] == "true"
    grant = granted.json()["grant"]
    assert (grant["priority"], grant["remaining"], grant["source"], grant["reference"]) == (3, 100, "admin",
                                                                                          "ticket 42")

    debit_body = {"amount": 40, "reason": "prepaid usage", "reference": "usage-2031-05"}
    debited = await client.post(admin_url(owner.account_id, "debits"), json=debit_body,
                                headers={**operator.headers, "Idempotency-Key": "usage-may"})
    assert debited.status_code == 201, debited.text
    again = await client.post(admin_url(owner.account_id, "debits"), json=debit_body,
                              headers={**operator.headers, "Idempotency-Key": "usage-may"})
    assert again.json() == debited.json()
    entry = debited.json()["entry"]
    assert (entry["delta"], entry["balance_after"], debited.json()["balance"]) == (-40, 60, 60)
    assert entry["allocations"] == [{"grant_id": grant["id"], "amount": 40}]

    refunded = await client.post(admin_url(owner.account_id, "refunds"),
                                 json={"entry_id": entry["id"], "amount": 15, "reason": "overcharged"},
                                 headers=operator.headers)
    assert refunded.status_code == 201, refunded.text
    assert (refunded.json()["entry"]["kind"], refunded.json()["entry"]["refund_of"]) == ("refund", entry["id"])
    error_of(await client.post(admin_url(owner.account_id, "refunds"),
                               json={"entry_id": entry["id"], "amount": 26, "reason": "too much"},
                               headers=operator.headers), 409, "refund_exceeds_debit")

    account = uuid.UUID(owner.account_id)
    await assert_ledger_agrees(session, account, 75)
    audited = (await session.execute(
        select(AuditEntry.action, AuditEntry.actor_id).where(AuditEntry.account_id == account,
                                                              AuditEntry.action.like("credits.%"))
        .order_by(AuditEntry.seq)
    )).all()
    assert [(a, str(who)) for a, who in audited] == [
        ("credits.granted", operator.user_id), ("credits.debited", operator.user_id),
        ("credits.refunded", operator.user_id),
    ]


async def test_an_overdraft_is_409_insufficient_credits_and_changes_nothing(client, session, signup, admin) -> None:
    operator = await admin()
    owner = await signup()
    await client.post(admin_url(owner.account_id, "grants"), json={"amount": 5, "reason": "x"}, headers=operator.headers)
    before = [e.id for e in await entries_of(session, uuid.UUID(owner.account_id))]
    error = error_of(await client.post(admin_url(owner.account_id, "debits"), json={"amount": 6, "reason": "x"},
                                       headers=operator.headers), 409, "insufficient_credits")
    assert error["details"] == {"balance": 5, "requested": 6}
    assert [e.id for e in await entries_of(session, uuid.UUID(owner.account_id))] == before
    assert (await client.get(f"/v1/accounts/{owner.account_id}/credits", headers=owner.headers)).json()["balance"] == 5


async def test_only_platform_admins_change_credits(client, signup, admin) -> None:
    operator = await admin()
    owner = await signup()
    for what, body in (("grants", {"amount": 5, "reason": "x"}), ("debits", {"amount": 1, "reason": "x"}),
                       ("refunds", {"entry_id": str(uuid.uuid4()), "reason": "x"})):
        error_of(await client.post(admin_url(owner.account_id, what), json=body, headers=owner.headers), 403,
                 "admin_required")
        error_of(await client.post(admin_url(str(uuid.uuid4()), what), json=body, headers=operator.headers), 404)
    error_of(await client.post(admin_url(owner.account_id, "grants"),
                               json={"amount": 5, "reason": "x", "expires_at": "2001-01-01T00:00:00Z"},
                               headers=operator.headers), 400, "expiry_in_past")
    error_of(await client.post(admin_url(owner.account_id, "grants"), json={"amount": 0, "reason": "x"},
                               headers=operator.headers), 422, "validation_error")
