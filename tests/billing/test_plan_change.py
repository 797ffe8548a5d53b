"""Plan changes (upgrade and downgrade, prorated): a card subscription changes at Stripe, which invoices the
difference and applies the new price only once it is paid; the plan then follows the price, whoever changed it
(our API or Stripe's portal); a retry repeats nothing at Stripe; subscriptions paid off-platform change at once
and answer the prorated difference; every other change is a clear refusal that changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from jushostit.billing.periods import prorated_difference
from jushostit.billing.service import sold_terms
from jushostit.kit.db import utcnow
from jushostit.models import Account, BillingMode, Membership, Plan, Role, Subscription
from tests.billing.helpers import error_of
from tests.billing.test_stripe_checkout import actions, card_account
from tests.conftest import asgi_client
from tests.stripe_stand_in import StripeStandIn, stripe_stand_in
from tests.webhooks.helpers import delivered, stripe_settings


async def plan(session, code: str) -> Plan:
    return await session.scalar(select(Plan).where(Plan.code == code))


async def stripe_starter(session, owner, stripe: StripeStandIn) -> Subscription:
    """An active card subscription to starter, past its checkout: Stripe holds it with one item at starter's
    price (made for its version, as our checkout makes it)."""
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.provider_customer_id = f"cus_{uuid.uuid4().hex[:8]}"
    starter = await plan(session, "starter")
    price = stripe.put({"id": f"price_{uuid.uuid4().hex[:8]}", "object": "price",
                        "lookup_key": f"jushostit:starter:{starter.version}"})
    now = datetime.now(UTC)
    row = Subscription(account_id=account.id, plan_id=starter.id, provider="stripe", status="active",
                       **{**sold_terms(starter), "stripe_price_id": price["id"]},
                       current_period_start=now - timedelta(days=10), current_period_end=now + timedelta(days=20),
                       external_id=f"sub_{uuid.uuid4().hex[:10]}")
    session.add(row)
    await session.flush()
    stripe.put({
        "id": row.external_id, "object": "subscription", "customer": account.provider_customer_id,
        "status": "active", "cancel_at_period_end": False, "metadata": {"subscription_id": str(row.id)},
        "items": {"object": "list", "data": [{
            "id": f"si_{uuid.uuid4().hex[:8]}", "object": "subscription_item", "price": price,
            "current_period_start": int(row.current_period_start.timestamp()),
            "current_period_end": int(row.current_period_end.timestamp())}]},
    })
    return row


def change_url(owner, subscription_id) -> str:
    return f"/v1/accounts/{owner.account_id}/subscriptions/{subscription_id}/change-plan"


async def reloaded(session, subscription_id) -> Subscription:
    session.expire_all()
    return await session.get(Subscription, subscription_id)


async def test_an_upgrade_goes_through_stripe_prorated_and_the_subscription_takes_the_new_plans_terms(
    app_factory, session, signup
) -> None:
    owner, _ = await card_account(session, signup)
    pro = await plan(session, "pro")
    pro_id, pro_version, pro_terms = pro.id, pro.version, (pro.price_minor, dict(pro.quotas))
    router, stripe = stripe_stand_in()
    with router:
        row = await stripe_starter(session, owner, stripe)
        row_id, external_id = row.id, row.external_id
        async with asgi_client(app_factory(**stripe_settings())) as client:
            changed = await client.post(change_url(owner, row_id), json={"plan": "pro"}, headers=owner.headers)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["subscription"]["plan"], body["pending_payment"], body["proration_minor"]) == ("pro", False, None)
    [update] = [b for b in stripe.created(f"/v1/subscriptions/{external_id}") if "items[0][price]" in b]
    assert update["proration_behavior"] == "always_invoice"
    assert update["payment_behavior"] == "pending_if_incomplete"  # no new plan before its payment
    [price] = stripe.created("/v1/prices")  # pro's version is sold at its own price, made once
    assert price["lookup_key"] == f"jushostit:pro:{pro_version}"
    subscription = await reloaded(session, row_id)
    assert (subscription.plan_id, (subscription.price_minor, subscription.quotas)) == (pro_id, pro_terms)
    assert subscription.plan_changes == 1
    assert {"subscription.plan_changed", "subscription.plan_change_requested"} <= set(await actions(session, row_id))


async def test_a_retry_of_a_change_whose_answer_was_lost_repeats_nothing_and_changing_back_is_a_new_change(
    app_factory, session, signup
) -> None:
    owner, _ = await card_account(session, signup)
    router, stripe = stripe_stand_in()
    with router:
        row = await stripe_starter(session, owner, stripe)
        row_id, external_id = row.id, row.external_id
        stripe.fail_next.append(httpx.ConnectError("the answer is lost on the way back"))
        async with asgi_client(app_factory(**stripe_settings())) as client:
            lost = await client.post(change_url(owner, row_id), json={"plan": "pro"}, headers=owner.headers)
            error_of(lost, 503, "payment_provider_unavailable")
            assert (await reloaded(session, row_id)).plan_changes == 0  # nothing recorded here
            retried = await client.post(change_url(owner, row_id), json={"plan": "pro"}, headers=owner.headers)
            back = await client.post(change_url(owner, row_id), json={"plan": "starter"}, headers=owner.headers)
    assert retried.status_code == 200 and retried.json()["subscription"]["plan"] == "pro", retried.text
    assert back.status_code == 200 and back.json()["subscription"]["plan"] == "starter", back.text
    # Stripe made the first change before the answer was lost: the retry finds it made and sends nothing; going
    # back is another change, under its own key.
    updates = [(body["items[0][price]"], key) for body, key in zip(
        stripe.created(f"/v1/subscriptions/{external_id}"), stripe.keys(f"/v1/subscriptions/{external_id}"),
        strict=True)]
    assert len(updates) == 2 and updates[0][1] != updates[1][1]
    assert (await reloaded(session, row_id)).plan_changes == 2


async def test_a_declined_upgrade_keeps_the_old_plan_until_stripe_takes_the_payment(app_factory, session, signup) -> None:
    owner, _ = await card_account(session, signup)
    router, stripe = stripe_stand_in()
    with router:
        row = await stripe_starter(session, owner, stripe)
        row_id = row.id
        stripe.declines = True
        async with asgi_client(app_factory(**stripe_settings())) as client:
            changed = await client.post(change_url(owner, row_id), json={"plan": "pro"}, headers=owner.headers)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["subscription"]["plan"], changed.json()["pending_payment"]) == ("starter", True)
    assert (await reloaded(session, row_id)).plan_changes == 0


async def test_a_plan_changed_in_stripes_portal_follows_the_price_and_a_price_we_do_not_sell_is_flagged(
    app_factory, session, signup, settings
) -> None:
    owner, _ = await card_account(session, signup)
    pro = await plan(session, "pro")
    pro_id, pro_version, pro_quotas = pro.id, pro.version, dict(pro.quotas)
    configured = settings.model_copy(update=stripe_settings())
    application = app_factory(**stripe_settings())
    router, stripe = stripe_stand_in()
    with router:
        row = await stripe_starter(session, owner, stripe)
        row_id, truth = row.id, stripe.objects[row.external_id]
        item = truth["items"]["data"][0]
        stripe.put({**truth, "items": {**truth["items"], "data": [{**item, "price": {
            "id": "price_someone_elses", "object": "price", "lookup_key": None}}]}})
        flagged = await delivered(application, session, configured, "customer.subscription.updated", {"id": row.external_id, "object": "subscription",
                                                                         "customer": truth["customer"]})
        assert (flagged.status, flagged.account_id) == ("unmatched", uuid.UUID(owner.account_id))  # its account's
        assert (await reloaded(session, row_id)).plan_id != pro_id

        stripe.put({**truth, "items": {**truth["items"], "data": [{**item, "price": {
            "id": "price_pro_in_portal", "object": "price", "lookup_key": f"jushostit:pro:{pro_version}"}}]}})
        applied = await delivered(application, session, configured, "customer.subscription.updated", {"id": row.external_id, "object": "subscription",
                                                                         "customer": truth["customer"]})
    assert applied.status == "processed", applied.last_error
    subscription = await reloaded(session, row_id)
    assert (subscription.plan_id, subscription.stripe_price_id, subscription.quotas) == (
        pro_id, "price_pro_in_portal", pro_quotas)


async def test_a_subscription_paid_off_platform_changes_at_once_and_answers_the_prorated_difference(
    client, session, signup, admin
) -> None:
    operator, owner = await admin(), await signup()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.invoice
    await session.flush()
    pending = await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "starter"},
                                headers=owner.headers)
    subscription_id = pending.json()["subscription"]["id"]
    paid = await client.post(f"/v1/admin/subscriptions/{subscription_id}/mark-paid", headers=operator.headers)
    assert paid.status_code == 200, paid.text
    starter, pro = await plan(session, "starter"), await plan(session, "pro")
    difference, starter_instances = pro.price_minor - starter.price_minor, starter.quotas["max_instances"]
    upgraded = await client.post(change_url(owner, subscription_id), json={"plan": "pro"}, headers=owner.headers)
    assert upgraded.status_code == 200, upgraded.text
    owed = upgraded.json()["proration_minor"]
    # At the very start of the period almost all of the difference is owed (the clock moved a little since).
    assert 0 < owed <= difference and upgraded.json()["subscription"]["plan"] == "pro"
    downgraded = await client.post(change_url(owner, subscription_id), json={"plan": "starter"}, headers=owner.headers)
    assert downgraded.status_code == 200 and downgraded.json()["proration_minor"] < 0, downgraded.text
    entitlement = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()["entitlement"]
    assert entitlement["quotas"]["max_instances"] == starter_instances
    changes = await actions(session, subscription_id)
    assert changes.count("subscription.plan_changed") == 2


async def test_changes_that_are_not_a_paid_plan_change_are_refused_and_change_nothing(
    client, session, signup, admin
) -> None:
    operator, owner, stranger = await admin(), await signup(), await signup()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.invoice
    await session.flush()
    pending = await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "starter"},
                                headers=owner.headers)
    subscription_id = pending.json()["subscription"]["id"]
    starter_id = (await plan(session, "starter")).id
    error_of(await client.post(change_url(owner, subscription_id), json={"plan": "pro"}, headers=owner.headers),
             409, "subscription_pending")
    await client.post(f"/v1/admin/subscriptions/{subscription_id}/mark-paid", headers=operator.headers)
    for plan_code, code in [("starter", "plan_unchanged"), ("free", "plan_change_not_supported")]:
        error_of(await client.post(change_url(owner, subscription_id), json={"plan": plan_code},
                                   headers=owner.headers), 409, code)
    error_of(await client.post(change_url(owner, subscription_id), json={"plan": "no-such-plan"},
                               headers=owner.headers), 404, "plan_not_found")
    (await plan(session, "pro")).retired_at = utcnow()
    await session.flush()
    error_of(await client.post(change_url(owner, subscription_id), json={"plan": "pro"}, headers=owner.headers),
             409, "plan_retired")
    # Another tenant's subscription does not exist for them; a bad body is the contract's 422.
    error_of(await client.post(change_url(stranger, subscription_id).replace(owner.account_id, stranger.account_id),
                               json={"plan": "pro"}, headers=stranger.headers), 404)
    error_of(await client.post(change_url(owner, subscription_id), json={"plan": "pro", "extra": 1},
                               headers=owner.headers), 422)
    session.expire_all()
    subscription = await session.get(Subscription, uuid.UUID(subscription_id))
    assert subscription.plan_changes == 0 and subscription.plan_id == starter_id


async def test_members_cannot_change_the_plan(client, session, signup) -> None:
    owner, member = await signup(), await signup()
    session.add(Membership(account_id=uuid.UUID(owner.account_id), user_id=uuid.UUID(member.user_id), role=Role.member))
    await session.flush()
    error_of(await client.post(change_url(owner, uuid.uuid4()), json={"plan": "pro"}, headers=member.headers), 403)


def test_the_prorated_difference_is_the_price_difference_times_the_share_of_the_period_left() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = datetime(2026, 12, 1, tzinfo=UTC)
    assert prorated_difference(900, 2900, start=start, end=end, at=start) == 2000
    assert prorated_difference(900, 2900, start=start, end=end, at=start + (end - start) / 2) == 1000
    assert prorated_difference(2900, 900, start=start, end=end, at=start + (end - start) / 4) == -1500
    assert prorated_difference(900, 2900, start=start, end=end, at=end + timedelta(days=1)) == 0
    assert prorated_difference(900, 2900, start=start, end=end, at=start - timedelta(days=1)) == 2000
    assert prorated_difference(1, 2, start=start, end=end, at=start + (end - start) / 2) == 0  # half to even
