"""Webhook ingest benchmark: signed Stripe events POSTed to a real uvicorn server on loopback (verify the
signature, store the event once, queue its processing, answer 200), next to the raw rate of the same database
inserting and committing a row of the same size from the same number of connections, in one run. The figure
that matters is the ratio: ingest costs a few database writes per event (the event, its job), so it cannot beat
one insert-and-commit; the goal is to stay within a small factor of it.

Processing is not measured here (no worker runs): events wait in the queue, as they would behind a busy worker.
The load comes from a child process (so it does not share the server's event loop), each client posting
pre-signed bodies (signatures are valid for 300 s).

Run: .venv/bin/python bench/webhook_bench.py [--events 3000] [--clients 20]  (embedded PostgreSQL in a temp dir,
or DATABASE_URL when set).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import stripe
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reconcile_bench import concurrent_load, uvicorn_server

from jushostit.app import create_app
from jushostit.bootstrap import open_container
from jushostit.config import Settings
from jushostit.kit.logging import configure_logging

SECRET = "whsec_bench"


def event_body(number: int) -> str:
    """An `invoice.paid` event of Stripe's usual size (about 1.5 KB)."""
    return json.dumps({
        "id": f"evt_bench_{uuid.uuid4().hex}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1, "type": "invoice.paid",
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": {
            "id": f"in_bench_{number}", "object": "invoice", "customer": f"cus_bench_{number % 50}",
            "status": "paid", "currency": "eur", "amount_paid": 900, "amount_due": 900,
            "lines": {"object": "list", "data": [{"id": f"il_{number}", "period": {"start": 1, "end": 2},
                                                   "description": "Starter x 1" * 20}]},
            "parent": {"subscription_details": {"subscription": f"sub_bench_{number}"}},
        }},
    })


async def post_load(url: str, bodies: list[str], clients: int) -> tuple[int, float, float, float, int]:
    """(requests, rate per second, p50 ms, p99 ms, errors), from `clients` concurrent connections."""

    async def post(client: httpx.AsyncClient, number: int) -> bool:
        body = bodies[number]
        headers = {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, SECRET),
                   "Content-Type": "application/json"}
        return (await client.post(url, content=body, headers=headers)).status_code == 200

    return await concurrent_load(clients, len(bodies), post, {})


async def raw_inserts(container, bodies: list[str], clients: int) -> float:
    """Inserts per second of the same payloads, one transaction each, from `clients` connections."""
    async with container.database.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE IF NOT EXISTS bench_raw (id uuid PRIMARY KEY, payload jsonb)"))
    queue = list(bodies)

    async def one_client() -> None:
        async with container.database.engine.connect() as connection:
            while queue:
                body = queue.pop()
                await connection.execute(text("INSERT INTO bench_raw VALUES (:id, CAST(:payload AS jsonb))"),
                                         {"id": uuid.uuid4(), "payload": body})
                await connection.commit()

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    async with container.database.engine.begin() as connection:
        await connection.execute(text("DROP TABLE bench_raw"))
    return len(bodies) / elapsed


async def main(events: int, clients: int) -> None:
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="jushostit-bench-", dir="/tmp") as tmp:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = Settings(
            data_dir=Path(tmp), database_url=os.environ.get("DATABASE_URL") or None,
            secret_keys=Fernet.generate_key().decode(), jwt_secret=uuid.uuid4().hex, port=port,
            stripe_webhook_secrets=[SecretStr(SECRET)], db_pool_size=clients,
            run_worker_in_serve=False,
        )
        async with open_container(settings) as container:
            app = create_app(settings, container)
            raw_rate = await raw_inserts(container, [event_body(n) for n in range(events)], clients)
            async with uvicorn_server(app, port):
                process = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--load-url", f"http://127.0.0.1:{port}/v1/webhooks/stripe",
                    "--events", str(events), "--clients", str(clients), stdout=asyncio.subprocess.PIPE,
                )
                requests, rate, p50, p99, errors = json.loads((await process.communicate())[0])
            async with container.database.engine.connect() as connection:
                stored = await connection.scalar(text("SELECT count(*) FROM webhook_events"))
                queued = await connection.scalar(text(
                    "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'webhooks.process'"))
    print(f"webhook ingest, {events} signed events from {clients} concurrent clients, one database, one run:")
    print(f"  raw INSERT + COMMIT of the same payloads ({clients} connections): {raw_rate:8.0f} rows/s")
    print(f"  POST /v1/webhooks/stripe (signed → verified, stored, queued, 200): {rate:8.0f} events/s"
          f"  p50 {p50:.1f} ms  p99 {p99:.1f} ms  errors {errors}")
    print(f"  ratio ingest / raw insert: {rate / raw_rate:.2f}")
    print(f"  stored {stored} events, {queued} processing jobs queued (of {requests} requests)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--load-url", help=argparse.SUPPRESS)  # the child process: run the load, print JSON
    options = parser.parse_args()
    if options.load_url:
        bodies = [event_body(n) for n in range(options.events)]
        print(json.dumps(asyncio.run(post_load(options.load_url, bodies, options.clients))))
    else:
        asyncio.run(main(options.events, options.clients))
