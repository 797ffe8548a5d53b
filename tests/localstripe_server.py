"""localstripe, a stateful Stripe fake (customers, payment methods, products, plans, subscriptions, invoices, and
signed webhooks of its events), in a child process on a free loopback port, for tests that point the product's
Stripe client at it (JUSHOSTIT_STRIPE_API_BASE).

Its own `localstripe` command listens on every interface and pickles its whole store into one fixed file,
/tmp/localstripe.pickle, on every change (shared by every run on the machine, and owned by whoever ran it
first). Run as a script, this module serves the same app on a socket bound to 127.0.0.1 by the parent, with
the store kept in memory only.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

API_KEY = "sk_test_localstripe"
START_SECONDS = 10.0


class LocalStripe:
    """A running localstripe: its address, and the calls a test makes to arrange Stripe's side."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.api = httpx.Client(base_url=base_url, auth=(API_KEY, ""), timeout=10)

    def post(self, path: str, **form: Any) -> dict[str, Any]:
        answer = self.api.post(path, data=form)
        assert answer.status_code == 200, (path, answer.status_code, answer.text)
        return dict(answer.json())

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        answer = self.api.get(path, params=params)
        assert answer.status_code == 200, (path, answer.status_code, answer.text)
        return dict(answer.json())

    def send_webhooks(self, name: str, url: str, secret: str) -> None:
        """Have localstripe POST each of its events to `url`, signed with `secret` (Stripe-Signature)."""
        answer = self.api.post(f"/_config/webhooks/{name}", data={"url": url, "secret": secret})
        assert answer.status_code == 200, answer.text

    def events(self) -> list[dict[str, Any]]:
        return list(self.get("/v1/events", limit=100)["data"])

    def paying_customer(self, customer_id: str) -> None:
        """Give the customer a test card (4242…) as the default payment method of its invoices."""
        card = self.post("/v1/payment_methods", type="card", **{
            "card[number]": "4242424242424242", "card[exp_month]": "12", "card[exp_year]": "2034",
            "card[cvc]": "123"})
        self.post(f"/v1/payment_methods/{card['id']}/attach", customer=customer_id)
        self.post(f"/v1/customers/{customer_id}", **{"invoice_settings[default_payment_method]": card["id"]})


@contextlib.contextmanager
def localstripe(log: Path) -> Iterator[LocalStripe]:
    """Start localstripe (its output in `log`), wait until it answers, stop it afterwards."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, __file__, str(listener.fileno())], pass_fds=[listener.fileno()],
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    listener.close()  # the child holds it now
    running = LocalStripe(base_url)
    try:
        _wait_until_it_answers(running, process, log)
        yield running
    finally:
        running.api.close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_it_answers(running: LocalStripe, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"localstripe exited with {process.returncode}: {log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            # The socket listens already: this waits in its backlog until the child serves it.
            if running.api.get("/v1/customers", timeout=max(deadline - time.monotonic(), 0.1)).status_code == 200:
                return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"localstripe did not answer within {START_SECONDS:.0f} s: {log.read_text()}")
        time.sleep(0.02)  # polling, bounded by the deadline


def _serve(listener_fd: int) -> None:
    # Imported here, in the child only: importing localstripe builds its app (and aiohttp warns about each route).
    from aiohttp import web
    from localstripe import resources, server

    resources.Store.dump_to_disk = lambda self: None  # in memory only
    logging.basicConfig(level=logging.INFO)  # its webhook deliveries are logged at INFO, into the test's log
    web.run_app(server.app, sock=socket.socket(fileno=listener_fd), print=None, access_log=None)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
