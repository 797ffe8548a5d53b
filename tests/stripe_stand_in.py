"""A Stripe stand-in for the SDK's HTTP calls (respx), on Stripe's documented shapes, for what localstripe lacks:
Checkout Sessions, Billing Meter Events, and idempotency keys (Stripe answers a repeated key with the first
response and creates nothing; localstripe ignores keys). It records every request so tests can read what was
sent."""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import respx
from starlette.requests import Request
from starlette.responses import Response

from tests.loopback_server import LoopbackServer
from tests.webhooks.helpers import STRIPE_TEST_BASE


def form(request: httpx.Request) -> dict[str, str]:
    """The SDK's form body, flat: `metadata[account_id]` → value."""
    return dict(parse_qsl(request.content.decode()))


@dataclass
class StripeStandIn:
    router: respx.MockRouter | None
    requests: list[tuple[str, dict[str, str], str | None]] = field(default_factory=list)  # (path, form, key)
    _answers: dict[str, httpx.Response] = field(default_factory=dict)  # by idempotency key
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    fail_next: list[Exception] = field(default_factory=list)  # raised (once each) after a write is made
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # what Stripe holds now, by id
    reads: list[str] = field(default_factory=list)  # ids read, in order
    declines: bool = False  # the customer's card is declined (a plan change's prorated payment fails)
    meter_events: dict[str, dict[str, Any]] = field(default_factory=dict)  # the events Stripe holds, by identifier

    def created(self, path: str) -> list[dict[str, str]]:
        return [body for where, body, _ in self.requests if where == path]

    def keys(self, path: str) -> list[str | None]:
        return [key for where, _, key in self.requests if where == path]

    def _write(self, request: httpx.Request, make: Any) -> httpx.Response:
        key = request.headers.get("Idempotency-Key")
        body = form(request)
        self.requests.append((request.url.path, body, key))
        if key is None or key not in self._answers:
            response = httpx.Response(200, json=make(body))
            if key is not None:
                self._answers[key] = response
        else:
            response = httpx.Response(200, json=self._answers[key].json(), headers={"Idempotent-Replayed": "true"})
        if self.fail_next:
            raise self.fail_next.pop(0)  # made at Stripe, but the answer is lost on the way back
        return response

    def _customer(self, body: dict[str, str]) -> dict[str, Any]:
        return {"id": f"cus_test{next(self._ids)}", "object": "customer", "email": body.get("email"),
                "name": body.get("name"), "metadata": {"account_id": body.get("metadata[account_id]")}}

    def _session(self, body: dict[str, str]) -> dict[str, Any]:
        number = next(self._ids)
        return {
            "id": f"cs_test_{number}", "object": "checkout.session", "mode": body["mode"], "status": "open",
            "url": f"https://checkout.stripe.test/c/pay/cs_test_{number}", "customer": body.get("customer"),
            "client_reference_id": body.get("client_reference_id"), "expires_at": int(time.time()) + 86400,
            "metadata": {k[9:-1]: v for k, v in body.items() if k.startswith("metadata[")}, "subscription": None,
        }

    def _change_price(self, current: dict[str, Any], body: dict[str, str]) -> dict[str, Any]:
        """A plan change (`pending_if_incomplete`): the item moves to the new price at once when the prorated
        invoice is paid; while `declines` is set, the payment fails and the change waits in `pending_update`."""
        price = self.objects[body["items[0][price]"]]
        if self.declines:
            return {**current, "pending_update": {"subscription_items": [{"price": price["id"]}]}}
        item = {**current["items"]["data"][0], "id": body["items[0][id]"], "price": price}
        return {**current, "items": {**current["items"], "data": [item]}, "pending_update": None}

    def _meter_event(self, request: httpx.Request) -> httpx.Response:
        """`POST /v1/billing/meter_events`: Stripe refuses (400, nothing held, nothing kept for the idempotency
        key) an event without its name or payload, or whose timestamp is older than 35 days or more than 5
        minutes ahead. Stripe enforces identifiers' uniqueness (24 hours at least): it holds one event per identifier,
        and a repeated identifier under another idempotency key is refused here."""
        body = form(request)
        missing = [name for name in ("event_name", "payload[stripe_customer_id]", "payload[value]") if not body.get(name)]
        if missing:
            return self._refused(request, body, f"Missing required param: {missing[0]}.", code="parameter_missing",
                                 param=missing[0])
        now = int(time.time())
        timestamp = int(body.get("timestamp", now))
        if timestamp < now - METER_EVENT_MAX_AGE or timestamp > now + METER_EVENT_MAX_AHEAD:
            return self._refused(request, body, "The timestamp must be within the past 35 calendar days or up to 5 "
                                 "minutes in the future.", param="timestamp")
        identifier = body.get("identifier") or f"mev_{next(self._ids)}"
        key = request.headers.get("Idempotency-Key")
        if identifier in self.meter_events and (key is None or key not in self._answers):
            return self._refused(request, body, f"An event with identifier {identifier} already exists.",
                                 param="identifier")

        def make(body: dict[str, str]) -> dict[str, Any]:
            event = {"object": "billing.meter_event", "event_name": body["event_name"], "identifier": identifier,
                     "payload": {k[8:-1]: v for k, v in body.items() if k.startswith("payload[")},
                     "timestamp": timestamp, "created": now, "livemode": False}
            self.meter_events[identifier] = event
            return event

        return self._write(request, make)

    def _refused(self, request: httpx.Request, body: dict[str, str], message: str, *, param: str,
                 code: str | None = None) -> httpx.Response:
        self.requests.append((request.url.path, body, request.headers.get("Idempotency-Key")))
        error = {"type": "invalid_request_error", "message": message, "param": param}
        return httpx.Response(400, json={"error": {**error, "code": code} if code else error})

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Set what Stripe holds for this object (a test moves the truth along, as Stripe would)."""
        self.objects[obj["id"]] = obj
        return obj

    def _read(self, request: httpx.Request, object_id: str) -> httpx.Response:
        self.reads.append(object_id)
        if object_id not in self.objects:
            return httpx.Response(404, json={"error": {
                "type": "invalid_request_error", "code": "resource_missing", "message": f"No such object: '{object_id}'"}})
        return httpx.Response(200, json=self.objects[object_id])

    def _remember(self, make: Any) -> Any:
        def made(body: dict[str, str]) -> dict[str, Any]:
            return self.put(make(body))
        return made

    def answer(self, request: httpx.Request) -> httpx.Response:
        """Stripe's answer to one request of the SDK: the writes it makes, or the object it holds."""
        path = request.url.path
        if request.method == "POST" and path == "/v1/customers":
            return self._write(request, self._remember(self._customer))
        if request.method == "POST" and path == "/v1/checkout/sessions":
            return self._write(request, self._remember(self._session))
        if request.method == "GET" and path == "/v1/prices":
            keys = {value for key, value in request.url.params.multi_items() if key.startswith("lookup_keys")}
            prices = [obj for obj in self.objects.values() if obj["object"] == "price" and obj["lookup_key"] in keys]
            return httpx.Response(200, json={"object": "list", "data": prices, "has_more": False, "url": path})
        if request.method == "POST" and path == "/v1/prices":
            return self._write(request, self._remember(lambda body: {
                "id": f"price_{next(self._ids)}", "object": "price", "product": body["product"],
                "currency": body["currency"], "unit_amount": int(body["unit_amount"]),
                "recurring": {"interval": body["recurring[interval]"]}, "lookup_key": body.get("lookup_key")}))
        if request.method == "POST" and path == "/v1/products":
            return self._write(request, self._remember(lambda body: {
                "id": body["id"], "object": "product", "name": body["name"]}))
        if request.method == "POST" and path == "/v1/billing/meter_events":
            return self._meter_event(request)
        if request.method == "POST" and path == "/v1/billing_portal/sessions":
            return self._write(request, lambda body: {
                "id": f"bps_{next(self._ids)}", "object": "billing_portal.session", "customer": body["customer"],
                "return_url": body["return_url"], "url": f"https://billing.stripe.test/p/session/{next(self._ids)}"})
        found = READABLE.match(path)
        if request.method == "GET" and found:
            return self._read(request, found["object_id"])
        changed = SUBSCRIPTION.match(path)
        if changed and changed["object_id"] in self.objects and request.method in ("POST", "DELETE"):
            current = self.objects[changed["object_id"]]
            if request.method == "DELETE":  # cancel now
                return self._write(request, lambda body: self.put(
                    {**current, "status": "canceled", "ended_at": int(time.time()), "canceled_at": int(time.time())}))
            if "items[0][price]" in form(request):
                return self._write(request, lambda body: self.put(self._change_price(current, body)))
            return self._write(request, lambda body: self.put(
                {**current, "cancel_at_period_end": body.get("cancel_at_period_end") == "true"}))
        return httpx.Response(404, json={"error": {"type": "invalid_request_error", "message": f"no route {path}"}})

    def install(self) -> StripeStandIn:
        assert self.router is not None
        self.router.route().mock(side_effect=self.answer)
        return self


METER_EVENT_MAX_AGE = 35 * 86400  # seconds: Stripe takes meter events up to 35 days old
METER_EVENT_MAX_AHEAD = 5 * 60  # and up to 5 minutes ahead
SUBSCRIPTION = re.compile(r"^/v1/subscriptions/(?P<object_id>[^/]+)$")
READABLE = re.compile(
    r"^/v1/(customers|checkout/sessions|subscriptions|invoices|products|prices)/(?P<object_id>[^/]+)$")


class StripeServer(LoopbackServer):
    """The same stand-in served over HTTP on loopback, for a `jushostit serve` process to call (every Stripe
    call of the product goes through JUSHOSTIT_STRIPE_API_BASE)."""

    def __init__(self) -> None:
        self.stand_in = StripeStandIn(router=None)
        super().__init__()

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        body = await request.body()
        answer = self.stand_in.answer(httpx.Request(request.method, str(request.url), headers=request.headers.raw,
                                                    content=body))
        await Response(answer.content, status_code=answer.status_code,
                       media_type="application/json")(scope, receive, send)


def stripe_stand_in() -> tuple[respx.MockRouter, StripeStandIn]:
    router = respx.mock(base_url=STRIPE_TEST_BASE, assert_all_called=False)
    return router, StripeStandIn(router).install()
