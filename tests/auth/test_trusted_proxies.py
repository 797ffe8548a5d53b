"""The client address behind the operator's proxies: X-Forwarded-For is believed only from trusted peers."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from sqlalchemy import select

from jushostit.kit.client_address import client_address
from jushostit.models import AuthThrottle
from tests.conftest import TEST_PASSWORD, asgi_client

LB = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "client"), [
    ("203.0.113.9", "198.51.100.1", [], "203.0.113.9"),  # no proxies configured: the header is ignored
    ("203.0.113.9", "198.51.100.1", LB, "203.0.113.9"),  # an untrusted peer's header is a forgery
    ("10.1.2.3", "198.51.100.1", LB, "198.51.100.1"),
    ("10.1.2.3", "6.6.6.6, 198.51.100.1", LB, "198.51.100.1"),  # the left part is the client's to forge
    ("10.1.2.3", "198.51.100.1, 10.9.9.9", LB, "198.51.100.1"),  # two hops of ours
    ("fd00::1", "2001:db8::7", LB, "2001:db8::7"),
    ("10.1.2.3", "", LB, "10.1.2.3"),
    ("10.1.2.3", "not-an-ip", LB, "10.1.2.3"),
    ("10.1.2.3", "10.4.4.4", LB, "10.4.4.4"),  # only proxies in the chain: the first is the client
])
def test_the_client_is_the_right_most_untrusted_hop_from_a_trusted_peer(peer, forwarded, trusted, client) -> None:
    assert client_address(peer, forwarded, trusted) == client


async def test_behind_a_trusted_load_balancer_sign_in_failures_count_per_real_client(
    app_factory, signup, session
) -> None:
    """Everyone reaches the server from the load balancer's address: without the setting they would share one
    throttle; with it each client is counted by its own address, and a forged header from outside is not."""
    user = await signup()
    app = app_factory(trusted_proxies=[ip_network("10.0.0.0/8")])
    async with asgi_client(app, ip="10.0.0.5") as through_lb:
        for client in ("198.51.100.10", "198.51.100.11"):
            refused = await through_lb.post("/v1/auth/login", json={"email": "ghost@example.com", "password": "nope"},
                                            headers={"X-Forwarded-For": client})
            assert refused.status_code == 401
        ok = await through_lb.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD},
                                   headers={"X-Forwarded-For": "198.51.100.12"})
        assert ok.status_code == 200
    async with asgi_client(app, ip="203.0.113.50") as outsider:
        forged = await outsider.post("/v1/auth/login", json={"email": "ghost@example.com", "password": "nope"},
                                     headers={"X-Forwarded-For": "198.51.100.10"})
        assert forged.status_code == 401
    keys = set((await session.scalars(select(AuthThrottle.key).where(AuthThrottle.key.like("ip-%")))).all())
    assert {"ip-unknown:198.51.100.10", "ip-unknown:198.51.100.11", "ip-unknown:203.0.113.50"} <= keys
    assert not any("10.0.0.5" in key for key in keys)
