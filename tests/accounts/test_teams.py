from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import select

from jushostit.models import EmailOutbox, Invite
from tests.conftest import TEST_PASSWORD


async def _invite_token(session, email: str) -> str:
    mail = await session.scalar(
        select(EmailOutbox).where(EmailOutbox.to_address == email, EmailOutbox.template == "invite")
    )
    assert mail is not None
    match = re.search(r"token=([A-Za-z0-9_\-]+)", mail.body)
    assert match
    return match.group(1)


async def _invite(client, owner, email: str, role: str = "member"):
    response = await client.post(
        f"/v1/accounts/{owner.account_id}/invites", json={"email": email, "role": role}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_invite_accept_joins_with_role_and_audits(client, session, signup) -> None:
    owner = await signup(account_name="Team Co")
    invitee = await signup("joiner@example.com")
    invite = await _invite(client, owner, "Joiner@Example.com", "admin")
    assert invite["email"] == "joiner@example.com" and invite["role"] == "admin"
    stored = await session.get(Invite, invite["id"])
    token = await _invite_token(session, "joiner@example.com")
    assert stored.token_hash != token and token not in stored.token_hash

    accepted = await client.post("/v1/invites/accept", json={"token": token}, headers=invitee.headers)
    assert accepted.status_code == 200, accepted.text
    me = (await client.get("/v1/me", headers=invitee.headers)).json()
    roles = {m["account_id"]: m["role"] for m in me["memberships"]}
    assert roles[owner.account_id] == "admin" and roles[invitee.account_id] == "owner"
    # Single use.
    again = await client.post("/v1/invites/accept", json={"token": token}, headers=invitee.headers)
    assert again.status_code == 404 and again.json()["error"]["code"] == "invite_invalid"


async def test_invite_accepted_by_another_email_is_refused_and_changes_nothing(client, session, signup) -> None:
    owner = await signup()
    await _invite(client, owner, "intended@example.com")
    intruder = await signup("intruder@example.com")
    token = await _invite_token(session, "intended@example.com")
    response = await client.post("/v1/invites/accept", json={"token": token}, headers=intruder.headers)
    assert response.status_code == 403 and response.json()["error"]["code"] == "invite_email_mismatch"
    members = (await client.get(f"/v1/accounts/{owner.account_id}/members", headers=owner.headers)).json()
    assert [m["email"] for m in members["items"]] == [owner.email]
    # The rightful invitee can still use it.
    intended = await signup("intended@example.com")
    ok = await client.post("/v1/invites/accept", json={"token": token}, headers=intended.headers)
    assert ok.status_code == 200


async def test_expired_and_revoked_invites_cannot_be_accepted(client, session, signup) -> None:
    owner = await signup()
    late = await signup("late@example.com")
    revoked_user = await signup("revoked@example.com")
    await _invite(client, owner, "late@example.com")
    revoked = await _invite(client, owner, "revoked@example.com")
    late_token = await _invite_token(session, "late@example.com")
    revoked_token = await _invite_token(session, "revoked@example.com")

    response = await client.delete(f"/v1/accounts/{owner.account_id}/invites/{revoked['id']}", headers=owner.headers)
    assert response.status_code == 200 and response.json()["revoked_at"] is not None
    refused = await client.post("/v1/invites/accept", json={"token": revoked_token}, headers=revoked_user.headers)
    assert refused.status_code == 404

    with time_machine.travel(datetime.now(UTC) + timedelta(days=7, minutes=1), tick=False):
        # Access tokens are short-lived: sign in again inside the travelled clock.
        login = await client.post("/v1/auth/login", json={"email": late.email, "password": TEST_PASSWORD})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        expired = await client.post("/v1/invites/accept", json={"token": late_token}, headers=headers)
    assert expired.status_code == 404


async def test_members_do_not_see_billing_and_cannot_manage(client, session, signup) -> None:
    owner = await signup()
    member = await signup("member@example.com")
    await _invite(client, owner, "member@example.com", "member")
    token = await _invite_token(session, "member@example.com")
    assert (await client.post("/v1/invites/accept", json={"token": token}, headers=member.headers)).status_code == 200

    as_owner = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    as_member = (await client.get(f"/v1/accounts/{owner.account_id}", headers=member.headers)).json()
    assert as_owner["billing"] == {"billing_mode": "free", "billing_email": owner.email, "contract_ref": None,
                                   "contract_ends_at": None, "budget_minor": None, "budget_currency": None,
                                   "month_spend_minor": 0}
    assert as_member["billing"] is None and as_member["role"] == "member"
    # Nor the usage charges and the budget: the member reads the usage itself, without its money.
    spend = await client.get(f"/v1/accounts/{owner.account_id}/spend", headers=member.headers)
    assert spend.status_code == 403 and spend.json()["error"]["code"] == "insufficient_role"
    usage = await client.get(f"/v1/accounts/{owner.account_id}/usage", headers=member.headers,
                             params={"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"})
    assert usage.status_code == 200, usage.text
    assert (usage.json()["currency"], usage.json()["cost_minor"]) == (None, None)

    patch = await client.patch(f"/v1/accounts/{owner.account_id}", json={"name": "Mine"}, headers=member.headers)
    assert patch.status_code == 403 and patch.json()["error"]["code"] == "insufficient_role"
    invite = await client.post(
        f"/v1/accounts/{owner.account_id}/invites", json={"email": "x@example.com"}, headers=member.headers
    )
    assert invite.status_code == 403
    budget = await client.put(f"/v1/accounts/{owner.account_id}/budget",
                              json={"monthly_limit_minor": 1, "currency": "EUR"}, headers=member.headers)
    assert budget.status_code == 403 and budget.json()["error"]["code"] == "insufficient_role"
    remove_owner = await client.delete(
        f"/v1/accounts/{owner.account_id}/members/{owner.user_id}", headers=member.headers
    )
    assert remove_owner.status_code == 403


async def test_roles_change_and_the_last_owner_stays(client, session, signup) -> None:
    owner = await signup()
    second = await signup("second@example.com")
    await _invite(client, owner, "second@example.com", "member")
    token = await _invite_token(session, "second@example.com")
    await client.post("/v1/invites/accept", json={"token": token}, headers=second.headers)
    base = f"/v1/accounts/{owner.account_id}/members"

    demote_self = await client.patch(f"{base}/{owner.user_id}", json={"role": "admin"}, headers=owner.headers)
    assert demote_self.status_code == 409 and demote_self.json()["error"]["code"] == "last_owner"
    leave = await client.delete(f"{base}/{owner.user_id}", headers=owner.headers)
    assert leave.status_code == 409

    promote = await client.patch(f"{base}/{second.user_id}", json={"role": "owner"}, headers=owner.headers)
    assert promote.status_code == 200 and promote.json()["role"] == "owner"
    # With two owners, the first may step down; then the second is the last one.
    assert (await client.patch(f"{base}/{owner.user_id}", json={"role": "member"}, headers=owner.headers)).status_code == 200
    last = await client.delete(f"{base}/{second.user_id}", headers=second.headers)
    assert last.status_code == 409
    # An admin may not hand out ownership.
    assert (await client.patch(f"{base}/{owner.user_id}", json={"role": "admin"}, headers=second.headers)).status_code == 200
    grant = await client.patch(f"{base}/{owner.user_id}", json={"role": "owner"}, headers=owner.headers)
    assert grant.status_code == 403
    removed = await client.delete(f"{base}/{owner.user_id}", headers=second.headers)
    assert removed.status_code == 204
    members = (await client.get(base, headers=second.headers)).json()["items"]
    assert [(m["email"], m["role"]) for m in members] == [("second@example.com", "owner")]


async def test_member_list_paginates(client, session, signup) -> None:
    owner = await signup()
    for i in range(3):
        user = await signup(f"p{i}@example.com")
        await _invite(client, owner, user.email)
        token = await _invite_token(session, user.email)
        await client.post("/v1/invites/accept", json={"token": token}, headers=user.headers)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(f"/v1/accounts/{owner.account_id}/members", params=params, headers=owner.headers)).json()
        seen += [m["email"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([owner.email, "p0@example.com", "p1@example.com", "p2@example.com"])
    assert len(seen) == len(set(seen))
