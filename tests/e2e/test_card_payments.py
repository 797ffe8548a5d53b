"""Issue 9's "Done means", over real HTTP: a real `jushostit serve` pointed at a Stripe stand-in served on
loopback (every Stripe call goes through JUSHOSTIT_STRIPE_API_BASE), fed Stripe's signed events. Card checkout →
checkout.session.completed → active and an instance running → invoice.payment_failed → past due with a banner,
still running → the account's grace (seconds, by its dunning policy) passes → stopped → invoice.paid → running
again; every step audited."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import stripe

from tests.e2e.test_serve import FIRST_START_BUDGET, PASSWORD, Serve, login, signup, wait_for
from tests.stripe_stand_in import StripeServer

pytestmark = pytest.mark.e2e

SECRET = "whsec_e2e_card_payments"
STATUS_BUDGET = 15.0
PERIOD = 30 * 86400


def send(base: str, event_type: str, obj: dict[str, Any]) -> None:
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "type": event_type,
                       "created": int(time.time()), "data": {"object": obj}})
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET)
    answer = httpx.post(f"{base}/v1/webhooks/stripe", content=body,
                        headers={"Stripe-Signature": header, "Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["duplicate"] is False, answer.text


def test_card_checkout_failed_payment_grace_and_recovery_on_a_running_server(serve: Serve) -> None:
    with StripeServer() as stripe_server:
        serve.extra_env = {
            "JUSHOSTIT_STRIPE_SECRET_KEY": "sk_test_e2e", "JUSHOSTIT_STRIPE_WEBHOOK_SECRETS": SECRET,
            "JUSHOSTIT_STRIPE_API_BASE": stripe_server.base_url,
        }
        serve.start(FIRST_START_BUDGET)
        base, truth = serve.base_url, stripe_server.stand_in
        customer = signup(serve, f"card-{uuid.uuid4().hex[:8]}@example.com")
        headers = {"Authorization": f"Bearer {customer['access_token']}"}
        account_id = customer["account"]["id"]
        admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
        assert serve.run("admin", "create", "--email", admin_email, "--password", PASSWORD).returncode == 0
        admin = {"Authorization": f"Bearer {login(base, admin_email)}"}

        def account() -> dict[str, Any]:
            return httpx.get(f"{base}/v1/accounts/{account_id}", headers=headers, timeout=30).json()

        assert account()["billing"]["billing_mode"] == "card"  # Stripe is configured: new accounts pay by card

        # Card checkout: a Stripe Checkout page, the subscription pending.
        checkout = httpx.post(f"{base}/v1/accounts/{account_id}/checkout", json={"plan": "starter"},
                              headers=headers, timeout=30)
        assert checkout.status_code == 201, checkout.text
        assert checkout.json()["checkout_url"].startswith("https://checkout.stripe.test/")
        ours = checkout.json()["subscription"]["id"]
        [session_id] = [key for key, obj in truth.objects.items() if obj["object"] == "checkout.session"]
        customer_id = truth.objects[session_id]["customer"]

        # The customer pays at Stripe: the session completes, the subscription runs, its invoice is paid.
        now = int(time.time())

        def subscription(status: str, start: int, invoice: str) -> dict[str, Any]:
            return truth.put({
                "id": "sub_e2e", "object": "subscription", "customer": customer_id, "status": status,
                "cancel_at_period_end": False, "latest_invoice": invoice,
                "metadata": {"subscription_id": ours, "account_id": account_id, "plan": "starter"},
                "items": {"data": [{"current_period_start": start, "current_period_end": start + PERIOD}]},
            })

        def invoice(number: str, status: str, start: int) -> dict[str, Any]:
            return truth.put({
                "id": number, "object": "invoice", "customer": customer_id, "status": status, "currency": "eur",
                "amount_paid": 900 if status == "paid" else 0,
                "parent": {"subscription_details": {"subscription": "sub_e2e"}},
                "lines": {"data": [{"period": {"start": start, "end": start + PERIOD}}]},
            })

        truth.put({**truth.objects[session_id], "status": "complete", "subscription": "sub_e2e"})
        subscription("active", now - 60, "in_e2e_1")
        invoice("in_e2e_1", "paid", now - 60)
        send(base, "checkout.session.completed", {"id": session_id, "object": "checkout.session",
                                                   "customer": customer_id})

        def subscription_status() -> str:
            page = httpx.get(f"{base}/v1/accounts/{account_id}/subscriptions", headers=headers, timeout=30).json()
            return next(item["status"] for item in page["items"] if item["id"] == ours)

        wait_for(lambda: subscription_status() == "active", STATUS_BUDGET, "the subscription to be active")

        order = httpx.post(f"{base}/v1/accounts/{account_id}/instances",
                           json={"template": "static-site", "name": "shop"}, headers=headers, timeout=30)
        assert order.status_code == 201, order.text
        instance = order.json()
        site = httpx.Client(base_url=base, headers={"Host": f"{instance['slug']}.localhost:{serve.port}"}, timeout=10)

        def status() -> str:
            return httpx.get(f"{base}/v1/instances/{instance['id']}", headers=headers, timeout=30).json()["status"]

        wait_for(lambda: status() == "running", STATUS_BUDGET, "the instance to run")

        # The renewal fails: Stripe moves to the next period, unpaid, and retries (past due, still running).
        renewal = int(time.time())
        subscription("past_due", renewal, "in_e2e_2")
        invoice("in_e2e_2", "open", renewal)
        send(base, "invoice.payment_failed", {"id": "in_e2e_2", "object": "invoice", "customer": customer_id})
        wait_for(lambda: account()["entitlement"]["warning_banner"], STATUS_BUDGET, "the past-due banner")
        assert account()["status"] == "past_due" and status() == "running"
        assert site.get("/").status_code == 200

        # The account's grace is seconds: when it ends, the services stop (an exact job at the deadline).
        policy = httpx.put(f"{base}/v1/admin/accounts/{account_id}/dunning-policy",
                           json={"grace": "PT5S", "reminders": []}, headers=admin, timeout=30)
        assert policy.status_code == 200, policy.text
        wait_for(lambda: status() == "stopped", STATUS_BUDGET, "the instance to stop when the grace ends")
        assert "billing" in account()["entitlement"]["holds"]
        assert site.get("/").status_code == 503

        # Paid after all: the billing hold is lifted and the services come back.
        subscription("active", renewal, "in_e2e_2")
        invoice("in_e2e_2", "paid", renewal)
        send(base, "invoice.paid", {"id": "in_e2e_2", "object": "invoice", "customer": customer_id})
        wait_for(lambda: status() == "running", STATUS_BUDGET, "the instance to run again")
        assert account()["status"] == "active" and account()["entitlement"]["warning_banner"] is None
        assert site.get("/").status_code == 200

        audit = httpx.get(f"{base}/v1/admin/audit", params={"limit": 200}, headers=admin, timeout=30).json()
        actions = {entry["action"] for entry in audit["items"] if entry.get("account_id") == account_id}
        assert {
            "subscription.created", "subscription.checkout_opened", "account.payment_customer_created",
            "subscription.linked", "subscription.synced", "subscription.payment_recorded",
            "account.billing_status_changed", "admin.dunning_policy_changed",
        } <= actions, actions
