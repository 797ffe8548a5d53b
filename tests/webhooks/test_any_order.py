"""Any order, any number of times (REFERENCE §1 F2, F4, F10, F17): a card subscription's life (sign-up, renewal, an upgrade,
failed payment, recovery, cancellation) told by Stripe's events delivered in every order within each step, with
redeliveries and repeated events, ends after every step in exactly the state in-order delivery gives; a
renewal never pays a period twice; and with no event at all the periodic pull reaches the same state.

Stripe is the stand-in of tests/stripe_stand_in.py holding the truth of each step; events are signed as Stripe
signs them and processed by the inbox's own `process` (the worker's code), inside the test's transaction."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from jushostit.billing.provider import StripeProvider
from jushostit.billing.stripe_api import stripe_client
from jushostit.kit.db import unit_of_work, utcnow
from jushostit.models import Account, BillingMode, Payment, Plan, Subscription, WebhookEvent
from jushostit.webhooks import service as inbox
from tests.conftest import asgi_client, joined_session
from tests.stripe_stand_in import StripeStandIn, stripe_stand_in
from tests.webhooks.helpers import event, signed, stripe_settings

DAY = 86400
T0 = int(datetime.now(UTC).timestamp()) - 2 * DAY  # the subscription began two days ago
PERIOD = 30 * DAY
OBJECT_OF = {"checkout.session": "checkout.session", "customer.subscription": "subscription", "invoice": "invoice"}


@dataclass
class Run:
    """One account through the whole life, with its own Stripe objects."""

    owner: Any
    subscription_id: str
    session_id: str
    sub: str
    customer: str
    pro_price: dict[str, Any]  # the price of the plan it changes to, as Stripe holds it

    def invoice(self, number: int) -> str:
        return f"in_{self.sub}_{number}"


def subscription_truth(run: Run, status: str, period: int, *, ended: bool = False, invoice: int,
                       pro: bool = False) -> dict[str, Any]:
    start = T0 + period * PERIOD
    item = {"id": f"si_{run.sub}", "object": "subscription_item",
            "current_period_start": start, "current_period_end": start + PERIOD}
    return {
        "id": run.sub, "object": "subscription", "customer": run.customer, "status": status,
        "cancel_at_period_end": False, "canceled_at": start + DAY if ended else None,
        "ended_at": start + DAY if ended else None,
        "items": {"object": "list", "data": [{**item, "price": run.pro_price} if pro else item]},
        "metadata": {"subscription_id": run.subscription_id, "account_id": run.owner.account_id, "plan": "starter"},
        "latest_invoice": run.invoice(invoice),
    }


def invoice_truth(run: Run, number: int, status: str, *, prorated_from: int | None = None) -> dict[str, Any]:
    """The invoice of period `number`; or, `prorated_from` seconds into it, the plan change's prorated one."""
    start = T0 + number * PERIOD + (prorated_from or 0)
    end = T0 + (number + 1) * PERIOD
    return {
        "id": run.invoice(number), "object": "invoice", "customer": run.customer, "status": status,
        "currency": "eur", "amount_paid": 900 if status == "paid" else 0,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": run.sub}},
        "lines": {"object": "list", "data": [{"period": {"start": start, "end": end}}]},
        "period_start": start - PERIOD, "period_end": start,
    }


# Each step: what Stripe holds after it, and the events it sends (type, object id).
def steps(run: Run) -> list[tuple[list[dict[str, Any]], list[tuple[str, str]]]]:
    session = {"id": run.session_id, "object": "checkout.session", "status": "complete", "subscription": run.sub,
               "metadata": {"subscription_id": run.subscription_id}}
    return [
        ([session, subscription_truth(run, "active", 0, invoice=0), invoice_truth(run, 0, "paid")],
         [("checkout.session.completed", run.session_id), ("customer.subscription.created", run.sub),
          ("invoice.paid", run.invoice(0)), ("invoice.payment_succeeded", run.invoice(0))]),
        ([subscription_truth(run, "active", 1, invoice=1), invoice_truth(run, 1, "paid")],
         [("invoice.finalized", run.invoice(1)), ("invoice.paid", run.invoice(1)),
          ("customer.subscription.updated", run.sub)]),
        # An upgrade five days into the period: its prorated invoice is paid, and the item moves to pro's price.
        ([subscription_truth(run, "active", 1, invoice=11, pro=True),
          {**invoice_truth(run, 1, "paid", prorated_from=5 * DAY), "id": run.invoice(11), "amount_paid": 1667}],
         [("customer.subscription.updated", run.sub), ("invoice.paid", run.invoice(11)),
          ("invoice.payment_succeeded", run.invoice(11))]),
        ([subscription_truth(run, "past_due", 2, invoice=2, pro=True), invoice_truth(run, 2, "open")],
         [("invoice.payment_failed", run.invoice(2)), ("customer.subscription.updated", run.sub)]),
        ([subscription_truth(run, "active", 2, invoice=2, pro=True), invoice_truth(run, 2, "paid")],
         [("invoice.paid", run.invoice(2)), ("customer.subscription.updated", run.sub)]),
        ([subscription_truth(run, "canceled", 2, ended=True, invoice=2, pro=True)],
         [("customer.subscription.updated", run.sub), ("customer.subscription.deleted", run.sub)]),
    ]


async def start(application, session, signup, stripe: StripeStandIn) -> Run:
    owner = await signup()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.card
    await session.flush()
    async with asgi_client(application) as client:
        response = await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "starter"},
                                     headers=owner.headers)
    assert response.status_code == 201, response.text
    pending = response.json()["subscription"]
    session.expire_all()
    row = await session.get(Subscription, uuid.UUID(pending["id"]))
    customer = (await session.get(Account, uuid.UUID(owner.account_id))).provider_customer_id
    pro_version = await session.scalar(select(Plan.version).where(Plan.code == "pro"))
    sub = f"sub_{uuid.uuid4().hex[:12]}"
    pro_price = {"id": f"price_pro_{sub}", "object": "price", "lookup_key": f"jushostit:pro:{pro_version}"}
    return Run(owner, pending["id"], row.checkout_session_id, sub, customer, pro_price)


async def deliver(application, session, settings, stripe: StripeStandIn, run: Run, changes) -> None:
    """Each (type, object id) as a new Stripe event, posted, then processed by the inbox."""
    client = stripe_client(settings)
    async with asgi_client(application) as http:
        for event_type, object_id, repeat in changes:
            obj = {"id": object_id, "object": OBJECT_OF[event_type.rsplit(".", 1)[0]], "customer": run.customer}
            body = repeat or event(event_type, obj)
            payload, headers = signed(body)
            answer = await http.post("/v1/webhooks/stripe", content=payload, headers=headers)
            assert answer.status_code == 200, answer.text
            row_id = await session.scalar(select(WebhookEvent.id).where(WebhookEvent.event_id == body["id"]))
            async with joined_session(session.bind) as worker, unit_of_work(worker):  # as the worker's job
                await inbox.process(worker, event_id=row_id, client=client, now=utcnow())
            session.expire_all()
            row = await session.get(WebhookEvent, row_id)
            assert row.status == "processed", (event_type, row.status, row.last_error)


async def state(session, run: Run) -> dict[str, Any]:
    await session.flush()
    session.expire_all()
    subscription = await session.get(Subscription, uuid.UUID(run.subscription_id))
    account = await session.get(Account, uuid.UUID(run.owner.account_id))
    payments = (await session.execute(
        select(Payment.period_start, Payment.period_end, Payment.amount_minor, Payment.external_reference)
        .where(Payment.subscription_id == subscription.id).order_by(Payment.period_start))).all()
    return {
        "plan": await session.scalar(select(Plan.code).where(Plan.id == subscription.plan_id)),
        "subscription": (subscription.status, subscription.external_id == run.sub,
                         subscription.current_period_start - datetime.fromtimestamp(T0, UTC),
                         subscription.current_period_end - subscription.current_period_start,
                         subscription.cancelled_at is not None),
        "payments": [(s - datetime.fromtimestamp(T0, UTC), e - s, amount, ref.replace(run.sub, "sub"))
                     for s, e, amount, ref in payments],
        "account": (account.status.value, sorted(account.suspension_reasons),
                    None if account.past_due_since is None
                    else account.past_due_since - datetime.fromtimestamp(T0, UTC)),
    }


async def test_every_order_and_every_redelivery_of_each_step_ends_in_the_in_order_state(
    app_factory, session, signup, settings
) -> None:
    configured = settings.model_copy(update=stripe_settings())
    application = app_factory(**stripe_settings())
    router, stripe = stripe_stand_in()
    with router:
        # In order, once each: the reference states after each step.
        reference = await start(application, session, signup, stripe)
        expected = []
        for truth, changes in steps(reference):
            for obj in truth:
                stripe.put(obj)
            await deliver(application, session, configured, stripe, reference,
                          [(kind, object_id, None) for kind, object_id in changes])
            expected.append(await state(session, reference))
        assert expected[0]["subscription"] == ("active", True, timedelta(0), timedelta(days=30), False)
        assert [step["plan"] for step in expected] == ["starter", "starter", "pro", "pro", "pro", "pro"]
        assert expected[2]["subscription"] == expected[1]["subscription"]  # the change moves no period
        assert expected[3]["account"] == ("past_due", [], timedelta(days=60))  # still running, with a banner
        assert expected[4]["account"] == ("active", [], None)
        assert [p[0] for p in expected[4]["payments"]] == [
            timedelta(0), timedelta(days=30), timedelta(days=35), timedelta(days=60)]  # the prorated one at 35
        assert expected[5]["subscription"][0] == "cancelled"

        # Every permutation of every step (the largest step has 4! = 24), each with one event redelivered and
        # one sent again as a new event, as Stripe does.
        runs = 24
        for number in range(runs):
            run = await start(application, session, signup, stripe)
            for index, (truth, changes) in enumerate(steps(run)):
                for obj in truth:
                    stripe.put(obj)
                orders = list(itertools.permutations(changes))
                order = list(orders[number % len(orders)])
                first = event(order[0][0], {"id": order[0][1], "object": OBJECT_OF[order[0][0].rsplit(".", 1)[0]],
                                            "customer": run.customer})
                delivery = [(order[0][0], order[0][1], first)] + [(k, o, None) for k, o in order[1:]]
                delivery += [(order[0][0], order[0][1], first), (order[-1][0], order[-1][1], None)]
                await deliver(application, session, configured, stripe, run, delivery)
                assert await state(session, run) == expected[index], (number, index, order)


async def test_with_no_event_at_all_the_periodic_pull_reaches_the_same_state(
    app_factory, session, signup, settings
) -> None:
    configured = settings.model_copy(update=stripe_settings())
    application = app_factory(**stripe_settings())
    router, stripe = stripe_stand_in()
    with router:
        run = await start(application, session, signup, stripe)
        provider = StripeProvider(stripe_client(configured))
        for truth, _ in steps(run)[:5]:
            for obj in truth:
                stripe.put(obj)
            session.expire_all()
            row = await session.get(Subscription, uuid.UUID(run.subscription_id))
            async with joined_session(session.bind) as worker, unit_of_work(worker):
                assert await inbox.pull_subscription(
                    worker, provider, account_id=row.account_id, external_id=row.external_id,
                    checkout_id=row.checkout_session_id,
                )
        pulled = await state(session, run)
    assert pulled["subscription"] == ("active", True, timedelta(days=60), timedelta(days=30), False)
    assert (pulled["plan"], pulled["account"]) == ("pro", ("active", [], None))
    # The pull reads each period's latest invoice (the plan change's prorated one among them); the past-due
    # step's invoice was paid by the time it was read again.
    assert [p[0] for p in pulled["payments"]] == [
        timedelta(0), timedelta(days=30), timedelta(days=35), timedelta(days=60)]
