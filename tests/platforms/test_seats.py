"""Seats on a shared Hopsworks platform, end to end: the admin registers the platform and a seat template, an
owner orders a seat for a member, and the reconciler (the real one, through the product's driver) makes billing
state true on the platform's admin API (the stand-in, over HTTP): active with the role's project limit, drift
undone, deactivated while suspended, active again, and on deletion the holder's projects removed, then the user.
A platform user we did not create is never taken over."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import delete, select, update

from jushostit.config import OIDCProvider
from jushostit.models import (
    AuditEntry,
    Instance,
    Membership,
    OIDCIdentity,
    Platform,
    Role,
    Seat,
    SeatProject,
    ServiceTemplate,
    StoredSecret,
)
from jushostit.runtime.seats import JOIN_HINT, TAKEN, UNREACHABLE
from tests.hopsworks_stand_in import API_KEY, HopsworksServer, HopsworksStandIn, hopsworks, hopsworks_server
from tests.live import Live, Signup, live

__all__ = ["hopsworks", "hopsworks_server", "live"]  # fixtures


class SeatShop:
    """A platform and a seat template on it, registered through the admin API, removed after the test."""

    def __init__(self, live: Live, admin: Signup, platform: dict[str, Any], template: str) -> None:
        self.live = live
        self.admin = admin
        self.platform = platform
        self.template = template

    async def owner_with_member(self, role: Role = Role.member) -> tuple[Signup, Signup]:
        owner = await self.live.paid_starter(self.admin, "Data Co")
        return owner, await self.live.add_member(owner, role)

    async def order(self, owner: Signup, member: Signup | str | None, name: str = "ann-seat",
                    headers: dict[str, str] | None = None) -> Any:
        body: dict[str, Any] = {"template": self.template, "name": name}
        if member is not None:
            body["member"] = member if isinstance(member, str) else member.user_id
        return await self.live.client.post(f"/v1/accounts/{owner.account_id}/instances", json=body,
                                           headers=headers or owner.headers)

    async def seat(self, instance_id: str) -> Seat:
        async with self.live.container.database.reader() as session:
            seat = await session.get(Seat, uuid.UUID(instance_id))
            assert seat is not None
            return seat

    async def projects(self, instance_id: str) -> list[tuple[int, str, str]]:
        async with self.live.container.database.reader() as session:
            rows = await session.scalars(select(SeatProject).where(SeatProject.instance_id == uuid.UUID(instance_id)))
            return [(p.project_id, p.name, p.namespace) for p in rows]


@pytest.fixture
async def shop(request: pytest.FixtureRequest, live: Live, hopsworks: HopsworksStandIn,
               hopsworks_server: HopsworksServer) -> AsyncIterator[SeatShop]:
    """A community platform, or what the test's indirect parameter says of it."""
    admin = await live.admin()
    name = f"hops-{uuid.uuid4().hex[:8]}"
    registered = await live.client.post("/v1/admin/platforms", headers=admin.headers, json={
        "name": name, "base_url": hopsworks_server.base_url, "api_key": API_KEY, "edition": "community",
        "project_limits": {"owner": 5, "admin": 5, "member": 0}, **getattr(request, "param", {})})
    assert registered.status_code == 201, registered.text
    code = f"seat-{uuid.uuid4().hex[:8]}"
    template = await live.client.post("/v1/admin/templates", headers=admin.headers, json={
        "code": code, "name": "Data platform seat", "kind": "seat", "platform": name})
    assert template.status_code == 201, template.text
    assert template.json()["spec"] == {"code": code, "name": "Data platform seat", "kind": "seat", "description": "",
                                       "platform": name, "project_limits": {}}
    hopsworks.seen.clear()  # the registration's connection test
    try:
        yield SeatShop(live, admin, registered.json(), code)
    finally:
        platform_id = uuid.UUID(registered.json()["id"])
        async with live.container.database.unit_of_work() as session:
            instances = select(Instance.id).where(Instance.template_code == code)
            await session.execute(delete(StoredSecret).where(StoredSecret.owner_type == "seat",
                                                             StoredSecret.owner_id.in_(instances)))
            await session.execute(delete(Instance).where(Instance.template_code == code))
            await session.execute(delete(ServiceTemplate).where(ServiceTemplate.code == code))
            await session.execute(delete(StoredSecret).where(StoredSecret.owner_id == platform_id))
            await session.execute(delete(Platform).where(Platform.id == platform_id))


async def test_a_seat_lives_through_order_suspension_restore_and_deletion_on_the_platform(
    live: Live, shop: SeatShop, hopsworks: HopsworksStandIn, hopsworks_server: HopsworksServer,
) -> None:
    owner, member = await shop.owner_with_member()
    ordered = await shop.order(owner, member)
    assert ordered.status_code == 201, ordered.text
    seat = ordered.json()
    assert (seat["status"], seat["tier"], seat["url"]) == ("provisioning", "seat", f"{hopsworks_server.base_url}/")
    assert hopsworks.calls() == [("GET", "/admin/users")]  # the order checked the email is free; made nothing

    # Running: the platform user exists, active, with a member's limit (0: set after the create, which would
    # have read 0 as "the cluster's default").
    first = await live.reconcile(owner.account_id)
    assert first is not None and first.instances[uuid.UUID(seat["id"])].status == "running"
    user = hopsworks.by_email(member.email)
    assert user is not None and (user.status, user.max_num_projects) == ("ACTIVATED_ACCOUNT", 0)
    shown = await live.instance(owner, seat["id"])
    assert (shown["status"], shown["status_reason"]) == ("running", JOIN_HINT)  # a member: shown how to join
    assert (await shop.seat(seat["id"])).platform_user_id == user.id
    assert [c for c in hopsworks.calls() if c[0] != "GET"] == [("POST", "/admin/users"), ("PUT", f"/admin/users/{user.id}")]

    # The initial password: to the holder, once.
    revealed = await live.client.get(f"/v1/instances/{seat['id']}/credentials", headers=member.headers)
    assert revealed.status_code == 200, revealed.text
    assert revealed.json() == {"url": f"{hopsworks_server.base_url}/", "values": [
        {"name": "username", "value": member.email}, {"name": "password", "value": user.password}]}
    again = await live.client.get(f"/v1/instances/{seat['id']}/credentials", headers=owner.headers)
    assert again.json()["values"] == [{"name": "username", "value": member.email}]

    # Converged: a second pass writes nothing, here or on the platform.
    hopsworks.seen.clear()
    idle = await live.reconcile(owner.account_id)
    assert idle is not None and idle.writes == 0
    assert all(method == "GET" for method, _ in hopsworks.calls())

    # Drift undone: a platform admin raised the limit and deactivated the user.
    hopsworks.drift(user, status="DEACTIVATED_ACCOUNT", max_num_projects=9)
    healed = await live.reconcile(owner.account_id)
    assert healed is not None and healed.writes == 1
    assert (user.status, user.max_num_projects) == ("ACTIVATED_ACCOUNT", 0)

    # The holder's projects are recorded with the namespaces Hopsworks runs them in.
    project = hopsworks.project("Fraud_Model", owner=user)
    await live.reconcile(owner.account_id)
    assert await shop.projects(seat["id"]) == [(project.id, "Fraud_Model", "fraud-model")]

    # Suspended: deactivated (data kept); a platform admin re-activating it is put back.
    account = f"/v1/admin/accounts/{owner.account_id}"
    suspended = await live.client.post(f"{account}/suspend", json={"reason": "admin"}, headers=shop.admin.headers)
    assert suspended.status_code == 200, suspended.text
    await live.reconcile(owner.account_id)
    assert user.status == "DEACTIVATED_ACCOUNT" and project.id in hopsworks.projects
    assert (await live.instance(owner, seat["id"]))["status"] == "stopped"
    hopsworks.drift(user, status="ACTIVATED_ACCOUNT")
    await live.reconcile(owner.account_id)
    assert user.status == "DEACTIVATED_ACCOUNT"

    # Restored.
    lifted = await live.client.post(f"{account}/unsuspend", json={"reason": "admin"}, headers=shop.admin.headers)
    assert lifted.status_code == 200, lifted.text
    await live.reconcile(owner.account_id)
    assert user.status == "ACTIVATED_ACCOUNT"
    assert (await live.instance(owner, seat["id"]))["status"] == "running"

    # The platform cannot be removed while it holds the seat.
    refused = await live.client.delete(f"/v1/admin/platforms/{shop.platform['id']}", headers=shop.admin.headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "platform_in_use")

    # Deleted: the holder's projects first, then the user, as Hopsworks requires.
    hopsworks.seen.clear()
    deleting = await live.client.delete(f"/v1/instances/{seat['id']}", headers=owner.headers)
    assert deleting.status_code == 202, deleting.text
    await live.reconcile(owner.account_id)
    writes = [c for c in hopsworks.calls() if c[0] != "GET"]
    assert writes == [("PUT", f"/admin/users/{user.id}"), ("DELETE", f"/admin/projects/{project.id}"),
                      ("DELETE", f"/admin/users/{user.id}")]
    assert hopsworks.users == {} and hopsworks.projects == {}
    assert (await live.row(seat["id"])).observed_status == "deleted"
    assert (await shop.seat(seat["id"])).removed_at is not None and await shop.projects(seat["id"]) == []
    async with live.container.database.reader() as session:
        actions = [entry.action for entry in (await session.scalars(
            select(AuditEntry).where(AuditEntry.target_id == seat["id"]).order_by(AuditEntry.seq))).all()]
    assert actions[0] == "instance.ordered" and {"seat.user_linked", "seat.user_removed"} <= set(actions)

    # With its seats gone (their records removed), the platform can be forgotten.
    forgotten = await live.client.delete(f"/v1/admin/platforms/{shop.platform['id']}", headers=shop.admin.headers)
    assert forgotten.status_code == 204, forgotten.text


async def test_an_email_that_belongs_to_a_platform_user_we_did_not_create_is_refused_and_never_taken_over(
    live: Live, shop: SeatShop, hopsworks: HopsworksStandIn,
) -> None:
    owner, member = await shop.owner_with_member()
    theirs = hopsworks.user(member.email.upper(), status="DEACTIVATED_ACCOUNT", max_num_projects=3)
    refused = await shop.order(owner, member)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "platform_user_exists")
    async with live.container.database.reader() as session:
        assert (await session.scalars(select(Instance).where(Instance.template_code == shop.template))).all() == []

    # Made on the platform by someone else between the order and the first pass: the seat fails, says why, and
    # the user is left exactly as it was.
    del hopsworks.users[theirs.id]
    ordered = await shop.order(owner, member)
    assert ordered.status_code == 201, ordered.text
    hopsworks.users[theirs.id] = theirs
    observed = await live.reconcile(owner.account_id)
    assert observed is not None
    seen = observed.instances[uuid.UUID(ordered.json()["id"])]
    assert (seen.status, seen.reason, seen.error) == ("failed", TAKEN, None)
    assert (theirs.status, theirs.max_num_projects) == ("DEACTIVATED_ACCOUNT", 3)
    assert all(method == "GET" for method, _ in hopsworks.calls())
    assert (await shop.seat(ordered.json()["id"])).platform_user_id is None


async def test_a_create_whose_answer_was_lost_is_adopted_as_ours(live: Live, shop: SeatShop,
                                                                 hopsworks: HopsworksStandIn) -> None:
    owner, member = await shop.owner_with_member(Role.admin)
    ordered = (await shop.order(owner, member)).json()
    # Our create reached the platform, but its answer did not come back (a 409 on the retry, as after a
    # timeout): the user under the seat's email was made by the create we had recorded as sent.
    hopsworks.race_next_create(member.email)
    observed = await live.reconcile(owner.account_id)
    assert observed is not None and observed.instances[uuid.UUID(ordered["id"])].status == "running"
    user = hopsworks.by_email(member.email)
    assert user is not None and (user.status, user.max_num_projects) == ("ACTIVATED_ACCOUNT", 5)  # an admin's
    seat = await shop.seat(ordered["id"])
    assert seat.platform_user_id == user.id and seat.create_sent_at is not None


async def test_an_outage_fails_the_seat_for_a_retry_and_the_next_pass_converges(
    live: Live, shop: SeatShop, hopsworks: HopsworksStandIn,
) -> None:
    owner, member = await shop.owner_with_member()
    ordered = (await shop.order(owner, member)).json()
    hopsworks.fail_next(2)  # within the client's retries: not even noticed
    first = await live.reconcile(owner.account_id)
    assert first is not None and first.instances[uuid.UUID(ordered["id"])].status == "running"

    hopsworks.fail_next(20)  # longer than the client retries: the pass fails the seat, to be retried
    user = hopsworks.by_email(member.email)
    assert user is not None
    hopsworks.drift(user, max_num_projects=4)
    failed = await live.reconcile(owner.account_id)
    assert failed is not None
    seen = failed.instances[uuid.UUID(ordered["id"])]
    assert (seen.status, seen.reason) == ("failed", UNREACHABLE) and "503" in (seen.error or "")
    row = await live.row(ordered["id"])
    assert row.observed_status == "failed" and row.failures == 1
    hopsworks.failures.clear()
    await live.reconcile(owner.account_id)
    assert user.max_num_projects == 0 and (await live.row(ordered["id"])).observed_status == "running"


async def test_a_seat_whose_holder_left_the_account_is_deactivated(live: Live, shop: SeatShop,
                                                                  hopsworks: HopsworksStandIn) -> None:
    owner, member = await shop.owner_with_member()
    ordered = (await shop.order(owner, member)).json()
    await live.reconcile(owner.account_id)
    async with live.container.database.unit_of_work() as session:
        await session.execute(delete(Membership).where(Membership.user_id == uuid.UUID(member.user_id),
                                                       Membership.account_id == uuid.UUID(owner.account_id)))
    await live.reconcile(owner.account_id)
    user = hopsworks.by_email(member.email)
    assert user is not None and user.status == "DEACTIVATED_ACCOUNT"
    shown = await live.instance(owner, ordered["id"])
    assert (shown["status"], shown["status_reason"]) == ("stopped", "its holder is no longer a member of the account")


async def test_ordering_a_seat_is_for_owners_and_admins_naming_a_member(live: Live, shop: SeatShop,
                                                                       hopsworks: HopsworksStandIn) -> None:
    owner, member = await shop.owner_with_member()
    outsider = await live.signup("Elsewhere")
    by_member = await shop.order(owner, member, headers=member.headers)
    assert (by_member.status_code, by_member.json()["error"]["code"]) == (403, "insufficient_role")
    nobody = await shop.order(owner, None)
    assert (nobody.status_code, nobody.json()["error"]["code"]) == (400, "member_required")
    stranger = await shop.order(owner, outsider)
    assert (stranger.status_code, stranger.json()["error"]["code"]) == (404, "member_not_found")
    app_for_member = await live.client.post(f"/v1/accounts/{owner.account_id}/instances", headers=owner.headers,
                                            json={"template": "static-site", "name": "site", "member": member.user_id})
    assert (app_for_member.status_code, app_for_member.json()["error"]["code"]) == (400, "member_not_applicable")
    assert hopsworks.seen == []

    ordered = (await shop.order(owner, member)).json()
    twice = await shop.order(owner, member, name="second-seat")
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "seat_exists")
    restart = await live.client.post(f"/v1/instances/{ordered['id']}/restart", headers=owner.headers)
    assert (restart.status_code, restart.json()["error"]["code"]) == (409, "not_restartable")
    other_member = await live.add_member(owner, Role.member)
    peeking = await live.client.get(f"/v1/instances/{ordered['id']}/credentials", headers=other_member.headers)
    assert (peeking.status_code, peeking.json()["error"]["code"]) == (403, "insufficient_role")


async def test_a_promoted_holder_gets_the_admin_limit_and_a_template_can_override_it(
    live: Live, shop: SeatShop, hopsworks: HopsworksStandIn,
) -> None:
    owner, member = await shop.owner_with_member()
    await shop.order(owner, member)
    await live.reconcile(owner.account_id)
    user = hopsworks.by_email(member.email)
    assert user is not None and user.max_num_projects == 0
    async with live.container.database.unit_of_work() as session:
        await session.execute(update(Membership).where(Membership.user_id == uuid.UUID(member.user_id))
                              .values(role=Role.admin))
    await live.reconcile(owner.account_id)
    assert user.max_num_projects == 5
    async with live.container.database.unit_of_work() as session:
        template = await session.scalar(select(ServiceTemplate).where(ServiceTemplate.code == shop.template))
        assert template is not None
        template.spec = {**template.spec, "project_limits": {"admin": 2}}
    await live.reconcile(owner.account_id)
    assert user.max_num_projects == 2


CORP = OIDCProvider(discovery_url="https://id.example.com/.well-known/openid-configuration", client_id="jushostit",
                    client_secret=SecretStr("not-used-here"))


@pytest.fixture
def corp_sign_in(live: Live) -> None:
    """A sign-in provider named `corp` configured on this server (its login flow is tested in tests/auth)."""
    live.configure(oidc_providers={"corp": CORP})


@pytest.mark.parametrize("shop", [{"edition": "enterprise", "oidc_provider": "corp"}], indirect=True)
async def test_on_enterprise_a_holder_who_signs_in_through_the_shared_provider_gets_a_remote_user(
    corp_sign_in: None, live: Live, shop: SeatShop, hopsworks: HopsworksStandIn,
) -> None:
    hopsworks.edition = "enterprise"
    owner, member = await shop.owner_with_member()
    local_only = await live.add_member(owner, Role.member)
    async with live.container.database.unit_of_work() as session:  # as a sign-in through `corp` leaves it
        session.add(OIDCIdentity(user_id=uuid.UUID(member.user_id), provider="corp", issuer="https://id.example.com",
                                 subject="corp|4711", email=member.email))
    remote = (await shop.order(owner, member)).json()
    local = (await shop.order(owner, local_only, name="local-seat")).json()
    await live.reconcile(owner.account_id)

    user = hopsworks.by_email(member.email)
    assert user is not None and (user.account_type, user.remote) == ("REMOTE_ACCOUNT_TYPE", ("OAUTH2", "corp|4711"))
    assert (user.status, user.max_num_projects) == ("ACTIVATED_ACCOUNT", 0)  # the limit set after the create
    [create] = [seen for seen in hopsworks.requests("POST", "/admin/users") if seen.query["email"] == member.email]
    assert "password" not in create.query
    shown = await live.client.get(f"/v1/instances/{remote['id']}/credentials", headers=member.headers)
    assert shown.json()["values"] == [{"name": "username", "value": member.email}]  # signs in at the provider

    other = hopsworks.by_email(local_only.email)
    assert other is not None and other.account_type == "M_ACCOUNT_TYPE"
    assert (await live.instance(owner, local["id"]))["status"] == "running"


async def test_remote_users_need_an_enterprise_platform_and_a_configured_provider(
    live: Live, hopsworks: HopsworksStandIn, hopsworks_server: HopsworksServer,
) -> None:
    admin = await live.admin()
    body = {"name": f"hops-{uuid.uuid4().hex[:8]}", "base_url": hopsworks_server.base_url, "api_key": API_KEY}
    community = await live.client.post("/v1/admin/platforms", headers=admin.headers,
                                       json={**body, "edition": "community", "oidc_provider": "corp"})
    assert community.status_code == 422 and "enterprise" in community.text
    unknown = await live.client.post("/v1/admin/platforms", headers=admin.headers,
                                     json={**body, "edition": "enterprise", "oidc_provider": "corp"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "unknown_oidc_provider")
    assert hopsworks.seen == []  # refused before the platform was asked anything


async def test_a_paid_seat_whose_user_was_deleted_on_the_platform_is_made_again(
    live: Live, shop: SeatShop, hopsworks: HopsworksStandIn,
) -> None:
    owner, member = await shop.owner_with_member()
    ordered = (await shop.order(owner, member)).json()
    await live.reconcile(owner.account_id)
    first = hopsworks.by_email(member.email)
    assert first is not None
    del hopsworks.users[first.id]  # a platform admin deleted it

    again = await live.reconcile(owner.account_id)

    assert again is not None and again.instances[uuid.UUID(ordered["id"])].status == "running"
    made = hopsworks.by_email(member.email)
    assert made is not None and made.id != first.id and made.status == "ACTIVATED_ACCOUNT"
    assert (await shop.seat(ordered["id"])).platform_user_id == made.id
    async with live.container.database.reader() as session:
        actions = [e.action for e in (await session.scalars(select(AuditEntry).where(
            AuditEntry.target_id == ordered["id"]).order_by(AuditEntry.seq))).all()]
    assert actions.count("seat.user_create_sent") == 2 and "seat.user_vanished" in actions


async def test_a_create_the_platform_refused_leaves_no_mark_so_a_user_made_later_is_not_taken_for_ours(
    live: Live, shop: SeatShop, hopsworks: HopsworksStandIn,
) -> None:
    owner, member = await shop.owner_with_member()
    ordered = (await shop.order(owner, member)).json()
    hopsworks.before_next("POST", "/admin/users", lambda stand_in: stand_in.fail_next(1, status=400))
    refused = await live.reconcile(owner.account_id)
    assert refused is not None and refused.instances[uuid.UUID(ordered["id"])].status == "failed"
    seat = await shop.seat(ordered["id"])
    assert (seat.create_sent_at, seat.platform_user_id) == (None, None) and hopsworks.by_email(member.email) is None

    theirs = hopsworks.user(member.email)  # someone else makes it meanwhile
    again = await live.reconcile(owner.account_id)
    assert again is not None and again.instances[uuid.UUID(ordered["id"])].reason == TAKEN
    assert theirs.status == "ACTIVATED_ACCOUNT" and (await shop.seat(ordered["id"])).platform_user_id is None


async def test_the_initial_password_is_shown_only_once_its_user_exists_and_a_resent_create_sends_the_same(
    live: Live, shop: SeatShop, hopsworks: HopsworksStandIn,
) -> None:
    owner, member = await shop.owner_with_member()
    ordered = (await shop.order(owner, member)).json()
    hopsworks.before_next("POST", "/admin/users", lambda stand_in: stand_in.fail_next(4))  # the create's outage
    await live.reconcile(owner.account_id)
    assert hopsworks.by_email(member.email) is None
    early = await live.client.get(f"/v1/instances/{ordered['id']}/credentials", headers=member.headers)
    assert early.json()["values"] == [{"name": "username", "value": member.email}]  # no user yet: kept

    await live.reconcile(owner.account_id)  # the create sent again, with the password recorded before the first
    user = hopsworks.by_email(member.email)
    assert user is not None
    sent = [seen.query.get("password") for seen in hopsworks.requests("POST", "/admin/users")]
    assert len(set(sent)) == 1 and sent[-1] == user.password
    shown = await live.client.get(f"/v1/instances/{ordered['id']}/credentials", headers=member.headers)
    assert shown.json()["values"][1] == {"name": "password", "value": user.password}
