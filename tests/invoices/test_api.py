"""The invoice routes: platform admins issue invoices (totals computed from the lines), mark them paid (one payment,
audited, a repeat adds nothing) and void them; owners and admins of the account list and read them, as JSON or a
printable page; members get 403, other tenants 404; bad input is refused in the contract's shape and changes
nothing."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from jushostit.models import Membership, Role
from tests.billing.helpers import error_of, reconcile_jobs
from tests.invoices.helpers import LINES, audit_of, invoiced, issue, payments_of, row_counts


def admin_url(invoice: dict, action: str) -> str:
    return f"/v1/admin/invoices/{invoice['id']}/{action}"


def customer_url(owner, invoice: dict | None = None, suffix: str = "") -> str:
    base = f"/v1/accounts/{owner.account_id}/invoices"
    return f"{base}/{invoice['id']}{suffix}" if invoice else base


async def test_an_admin_issues_an_invoice_totalled_from_its_lines_due_in_30_days_and_audited(
    client, session, signup, admin
) -> None:
    operator, owner = await admin(), await invoiced(session, signup)
    now = datetime.now(UTC)
    with time_machine.travel(now, tick=False):
        invoice = await issue(client, operator.headers, owner, memo="PO 4711")

    assert invoice["lines"] == [
        {"position": 1, "description": "Managed hosting, December", "quantity": 3, "unit_amount_minor": 4900,
         "amount_minor": 14700},
        {"position": 2, "description": "Setup", "quantity": 1, "unit_amount_minor": 15000, "amount_minor": 15000},
    ]
    assert (invoice["total_minor"], invoice["total"], invoice["currency"], invoice["currency_exponent"]) == (
        29700, "297.00", "EUR", 2)
    assert (invoice["status"], invoice["overdue"], invoice["memo"]) == ("open", False, "PO 4711")
    assert re.fullmatch(rf"INV-{now.year}-\d{{6}}", invoice["number"]), invoice["number"]
    assert datetime.fromisoformat(invoice["issued_at"]) == now
    assert datetime.fromisoformat(invoice["due_at"]) == now + timedelta(days=30)
    [created] = await audit_of(session, "invoice.created", invoice["id"])
    assert created.account_id == uuid.UUID(owner.account_id) and created.actor_id == uuid.UUID(operator.user_id)
    assert created.after["number"] == invoice["number"] and created.after["total_minor"] == 29700
    # The due date is a deadline of the account's entitlement: a reconcile is asked for.
    assert len(await reconcile_jobs(session, owner.account_id)) == 1


async def test_amounts_are_shown_with_the_currencys_exponent_and_a_due_date_may_be_given(
    client, session, signup, admin
) -> None:
    operator, owner = await admin(), await invoiced(session, signup)
    due = (datetime.now(UTC) + timedelta(days=45)).replace(microsecond=0)
    invoice = await issue(client, operator.headers, owner, currency="JPY", due_at=due.isoformat(),
                          lines=[{"description": "Yearly plan", "quantity": 2, "unit_amount_minor": 60000}])
    assert (invoice["total_minor"], invoice["total"], invoice["currency_exponent"]) == (120000, "120000", 0)
    assert datetime.fromisoformat(invoice["due_at"]) == due
    on_receipt = await issue(client, operator.headers, owner, net_days=0)
    assert on_receipt["due_at"] == on_receipt["issued_at"]


async def test_an_account_not_billed_by_invoice_is_refused_and_nothing_changes(client, session, signup, admin) -> None:
    operator, owner = await admin(), await signup()  # billed `free`, as new accounts are without Stripe
    before = await row_counts(session)
    refused = await client.post(f"/v1/admin/accounts/{owner.account_id}/invoices",
                                json={"currency": "EUR", "lines": LINES}, headers=operator.headers)
    assert error_of(refused, 409, "billing_mode_not_invoice")["details"] == {"billing_mode": "free"}
    nobody = await client.post(f"/v1/admin/accounts/{uuid.uuid4()}/invoices",
                               json={"currency": "EUR", "lines": LINES}, headers=operator.headers)
    error_of(nobody, 404, "not_found")
    error_of(await client.post(f"/v1/admin/accounts/{owner.account_id}/invoices",
                               json={"currency": "EUR", "lines": LINES}, headers=owner.headers), 403, "admin_required")
    assert await row_counts(session) == before


def line(**changes) -> dict:
    return {"description": "Hosting", "quantity": 1, "unit_amount_minor": 100, **changes}


BAD_INPUT = {
    "negative amount": ({"lines": [line(unit_amount_minor=-1)]}, 422, ["body", "lines", 0, "unit_amount_minor"]),
    "fractional amount": ({"lines": [line(unit_amount_minor=12.5)]}, 422, ["body", "lines", 0, "unit_amount_minor"]),
    "amount as a string": ({"lines": [line(unit_amount_minor="100")]}, 422,
                           ["body", "lines", 0, "unit_amount_minor"]),
    "zero quantity": ({"lines": [line(quantity=0)]}, 422, ["body", "lines", 0, "quantity"]),
    "no lines": ({"lines": []}, 422, ["body", "lines"]),
    "101 lines": ({"lines": [line()] * 101}, 422, ["body", "lines"]),
    "a total over 10^15": ({"lines": [line(quantity=1_000_000, unit_amount_minor=10**10)]}, 422, ["body", "lines"]),
    "lowercase currency": ({"currency": "eur"}, 422, ["body", "currency"]),
    "unknown currency": ({"currency": "XXX"}, 422, ["body", "currency"]),
    "currency of four letters": ({"currency": "EURO"}, 422, ["body", "currency"]),
    "description too long": ({"lines": [line(description="d" * 201)]}, 422, ["body", "lines", 0, "description"]),
    "description with a control character": ({"lines": [line(description="a\x07b")]}, 422,
                                             ["body", "lines", 0, "description"]),
    "memo too long": ({"memo": "m" * 1001}, 422, ["body", "memo"]),
    "net days over a year": ({"net_days": 366}, 422, ["body", "net_days"]),
    "due date and net days both": ({"due_at": "2099-01-01T00:00:00Z", "net_days": 10}, 422, ["body"]),
    "due date not RFC 3339": ({"due_at": "next Tuesday"}, 422, ["body", "due_at"]),
    "a total the client sets": ({"total_minor": 1}, 422, ["body", "total_minor"]),
    "due date in the past": ({"due_at": "2001-01-01T00:00:00Z"}, 400, None),
}


@pytest.mark.parametrize("case", BAD_INPUT)
async def test_bad_input_is_refused_in_the_contract_shape_and_changes_nothing(
    client, session, signup, admin, case
) -> None:
    operator, owner = await admin(), await invoiced(session, signup)
    changes, status, loc = BAD_INPUT[case]
    before = await row_counts(session)
    response = await client.post(f"/v1/admin/accounts/{owner.account_id}/invoices",
                                 json={"currency": "EUR", "lines": [line()], **changes}, headers=operator.headers)
    error = error_of(response, status, "validation_error" if status == 422 else "due_date_in_past")
    if loc is not None:
        assert loc in [detail["loc"] for detail in error["details"]], error
    assert await row_counts(session) == before


async def test_owners_list_and_read_their_invoices_members_get_403_and_other_tenants_404(
    client, session, signup, admin
) -> None:
    operator, owner, stranger = await admin(), await invoiced(session, signup), await invoiced(session, signup)
    member = await signup()
    session.add(Membership(account_id=uuid.UUID(owner.account_id), user_id=uuid.UUID(member.user_id), role=Role.member))
    await session.flush()
    first, second = await issue(client, operator.headers, owner), await issue(client, operator.headers, owner)
    theirs = await issue(client, operator.headers, stranger)

    listed = await client.get(customer_url(owner), headers=owner.headers)
    assert listed.status_code == 200, listed.text
    assert [i["id"] for i in listed.json()["items"]] == [second["id"], first["id"]]  # newest first
    page = (await client.get(customer_url(owner), params={"limit": 1}, headers=owner.headers)).json()
    assert [i["id"] for i in page["items"]] == [second["id"]] and page["next_cursor"]
    rest = (await client.get(customer_url(owner), params={"limit": 1, "cursor": page["next_cursor"]},
                             headers=owner.headers)).json()
    assert [i["id"] for i in rest["items"]] == [first["id"]] and rest["next_cursor"] is None
    voided = await client.post(admin_url(second, "void"), json={"reason": "issued twice"}, headers=operator.headers)
    assert voided.status_code == 200, voided.text
    for state, expected in (("open", [first["id"]]), ("void", [second["id"]]), ("paid", [])):
        filtered = await client.get(customer_url(owner), params={"status": state}, headers=owner.headers)
        assert [i["id"] for i in filtered.json()["items"]] == expected, state
    one = await client.get(customer_url(owner, first), headers=owner.headers)
    assert one.status_code == 200 and one.json() == first

    # Another tenant's invoice, through the owner's own account or through the other account: 404.
    error_of(await client.get(customer_url(owner, theirs), headers=owner.headers), 404, "invoice_not_found")
    error_of(await client.get(customer_url(owner, theirs, "/html"), headers=owner.headers), 404, "invoice_not_found")
    for suffix in ("", "/html"):
        error_of(await client.get(customer_url(stranger, theirs, suffix), headers=owner.headers), 404, "not_found")
    error_of(await client.get(customer_url(stranger), headers=owner.headers), 404, "not_found")
    # Like billing: plain members of the account do not see it.
    for url in (customer_url(owner), customer_url(owner, first), customer_url(owner, first, "/html")):
        error_of(await client.get(url, headers=member.headers), 403, "insufficient_role")


async def test_the_printable_invoice_is_escaped_html_with_a_print_stylesheet_and_no_script(
    client, session, signup, admin
) -> None:
    operator, owner = await admin(), await invoiced(session, signup, name="Acme <i>Evil</i>")
    invoice = await issue(client, operator.headers, owner, memo="Pay to <b>IBAN</b>\nThank you", lines=[
        {"description": "<script>alert(1)</script> & co", "quantity": 2, "unit_amount_minor": 1250},
    ])
    page = await client.get(customer_url(owner, invoice, "/html"), headers=owner.headers)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert (page.headers["x-content-type-options"], page.headers["cache-control"]) == ("nosniff", "no-store")
    html = page.text
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "Acme &lt;i&gt;Evil&lt;/i&gt;" in html and "Pay to &lt;b&gt;IBAN&lt;/b&gt;" in html
    assert "@media print" in html and f"Invoice {invoice['number']}" in html
    assert "12.50" in html and "25.00 EUR" in html and "JusHostIt" in html  # the issuer's default
    assert "Please pay by" in html and "PAID" not in html
    paid = await client.post(admin_url(invoice, "mark-paid"), json={"reference": "<wire> 42"},
                             headers=operator.headers)
    assert paid.status_code == 200, paid.text
    receipt = (await client.get(customer_url(owner, invoice, "/html"), headers=owner.headers)).text
    assert "PAID" in receipt and "Payment reference: &lt;wire&gt; 42" in receipt and "Please pay by" not in receipt
    # JSON carries the text as it was given; only the page escapes it.
    shown = (await client.get(customer_url(owner, invoice), headers=owner.headers)).json()
    assert shown["lines"][0]["description"] == "<script>alert(1)</script> & co"


async def test_marking_paid_records_one_payment_audited_and_a_repeat_adds_nothing(client, session, signup, admin) -> None:
    operator, owner = await admin(), await invoiced(session, signup)
    invoice = await issue(client, operator.headers, owner)
    paid = await client.post(admin_url(invoice, "mark-paid"), json={"reference": "SEPA 2026-0042"},
                             headers=operator.headers)
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["payment_reference"]) == ("paid", "SEPA 2026-0042")
    assert paid.json()["paid_at"] is not None and paid.json()["overdue"] is False
    [payment] = await payments_of(session, invoice["id"])
    assert (payment.amount_minor, payment.currency, payment.source, payment.provider) == (29700, "EUR", "admin", "manual")
    assert payment.account_id == uuid.UUID(owner.account_id) and payment.recorded_by == uuid.UUID(operator.user_id)
    assert (payment.subscription_id, payment.period_start, payment.external_reference) == (None, None, "SEPA 2026-0042")
    [entry] = await audit_of(session, "invoice.paid", invoice["id"])
    assert entry.before == {"status": "open"} and entry.after["payment_id"] == str(payment.id)

    again = await client.post(admin_url(invoice, "mark-paid"), json={"reference": "another"}, headers=operator.headers)
    assert again.status_code == 200 and again.json() == paid.json()  # answered the same
    assert len(await payments_of(session, invoice["id"])) == 1 and len(await audit_of(session, "invoice.paid",
                                                                                          invoice["id"])) == 1
    error_of(await client.post(admin_url(invoice, "void"), json={"reason": "late"}, headers=operator.headers), 409,
             "invoice_paid")
    assert (await client.get(customer_url(owner, invoice), headers=owner.headers)).json() == paid.json()
    error_of(await client.post(f"/v1/admin/invoices/{uuid.uuid4()}/mark-paid", json={}, headers=operator.headers), 404,
             "invoice_not_found")
    error_of(await client.post(admin_url(invoice, "mark-paid"), json={}, headers=owner.headers), 403, "admin_required")


async def test_a_void_invoice_is_owed_no_more_cannot_be_paid_and_voiding_it_again_changes_nothing(
    client, session, signup, admin
) -> None:
    operator, owner = await admin(), await invoiced(session, signup)
    invoice = await issue(client, operator.headers, owner)
    error_of(await client.post(admin_url(invoice, "void"), json={}, headers=operator.headers), 422, "validation_error")
    voided = await client.post(admin_url(invoice, "void"), json={"reason": "issued twice"}, headers=operator.headers)
    assert voided.status_code == 200, voided.text
    assert (voided.json()["status"], voided.json()["void_reason"]) == ("void", "issued twice")
    assert voided.json()["voided_at"] is not None
    again = await client.post(admin_url(invoice, "void"), json={"reason": "again"}, headers=operator.headers)
    assert again.status_code == 200 and again.json() == voided.json()
    [entry] = await audit_of(session, "invoice.voided", invoice["id"])
    assert entry.after["void_reason"] == "issued twice"
    error_of(await client.post(admin_url(invoice, "mark-paid"), json={}, headers=operator.headers), 409, "invoice_void")
    assert await payments_of(session, invoice["id"]) == []


async def test_admins_list_every_accounts_invoices_by_account_and_status(client, session, signup, admin) -> None:
    operator, one, other = await admin(), await invoiced(session, signup), await invoiced(session, signup)
    a, b = await issue(client, operator.headers, one), await issue(client, operator.headers, other)
    paid = await client.post(admin_url(b, "mark-paid"), json={}, headers=operator.headers)
    assert paid.status_code == 200, paid.text

    def ids(response) -> list[str]:
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["items"]]

    everything = ids(await client.get("/v1/admin/invoices", params={"limit": 200}, headers=operator.headers))
    assert everything.index(b["id"]) < everything.index(a["id"])  # newest first
    assert ids(await client.get("/v1/admin/invoices", params={"account_id": one.account_id},
                                headers=operator.headers)) == [a["id"]]
    assert ids(await client.get("/v1/admin/invoices", params={"account_id": other.account_id, "status": "paid"},
                                headers=operator.headers)) == [b["id"]]
    assert ids(await client.get("/v1/admin/invoices", params={"account_id": other.account_id, "status": "open"},
                                headers=operator.headers)) == []
    error_of(await client.get("/v1/admin/invoices", params={"status": "late"}, headers=operator.headers), 422)
    error_of(await client.get("/v1/admin/invoices", headers=one.headers), 403, "admin_required")


async def test_an_idempotency_key_makes_a_retried_create_answer_the_first_invoice(client, session, signup, admin) -> None:
    operator, owner = await admin(), await invoiced(session, signup)
    keyed = {**operator.headers, "Idempotency-Key": "invoice-december"}
    url, body = f"/v1/admin/accounts/{owner.account_id}/invoices", {"currency": "EUR", "lines": LINES}
    first = await client.post(url, json=body, headers=keyed)
    assert first.status_code == 201, first.text
    before = await row_counts(session)
    retried = await client.post(url, json=body, headers=keyed)
    assert retried.status_code == 201 and retried.json() == first.json()
    assert retried.headers["idempotent-replayed"] == "true"
    assert await row_counts(session) == before
    other = await client.post(url, json={**body, "currency": "USD"}, headers=keyed)
    error_of(other, 409, "idempotency_key_reused")
