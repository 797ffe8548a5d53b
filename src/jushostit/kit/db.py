"""Database engine, sessions and the request-scoped unit of work.

The request dependency commits on success and rolls back on error; jobs buffered during the request are
deferred only after the commit and dropped on rollback (REFERENCE §5, §10). An endpoint marked `read_only`
gets an autocommit session instead: no transaction, no BEGIN/COMMIT round trips. Pooled connections are
pinged only after being idle a while (`ping_when_idle`), not before every request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, TypeDecorator, event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from jushostit.kit import jobs
from jushostit.kit.errors import AppError


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """timestamptz that refuses naive datetimes and always returns aware UTC values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def sqlalchemy_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+psycopg:// and return the psycopg 3 SQLAlchemy URL."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a PostgreSQL URL (postgresql://...)")


def libpq_url(url: str) -> str:
    """The same database as a libpq URI, for procrastinate's own connector."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://") :]


# A pooled connection used less than this long ago is not pinged before its next use (see ping_when_idle).
PING_AFTER_IDLE_SECONDS = 5.0


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    # hide_parameters: a statement's error (and so its logged traceback) never shows the values bound to it.
    engine = create_async_engine(
        sqlalchemy_url(url), pool_size=pool_size, max_overflow=pool_size, hide_parameters=True
    )
    ping_when_idle(engine, PING_AFTER_IDLE_SECONDS)
    return engine


def ping_when_idle(engine: AsyncEngine, after_seconds: float) -> None:
    """SQLAlchemy's pool_pre_ping, but only for a connection idle for `after_seconds` or longer: the ping is a
    round trip before every request's first statement, and a connection used a moment ago is alive. One lost
    in between (the server restarted) fails its statement, which replaces every connection older than that."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < after_seconds:
            return  # new, or used a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError() from error  # the pool reconnects and retries the checkout
            raise

    event.listen(pool, "checkin", on_checkin)
    event.listen(pool, "checkout", on_checkout)


@dataclass
class Database:
    engine: AsyncEngine
    autocommit: AsyncEngine  # the same pool, without transactions (each statement commits)
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 5) -> Database:
        engine = create_engine(url, pool_size=pool_size)
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        return cls(
            engine, autocommit, async_sessionmaker(engine, expire_on_commit=False), async_sessionmaker(autocommit)
        )

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        """A read-only session in autocommit: no BEGIN/COMMIT round trips, for hot read paths that tolerate
        each query seeing its own snapshot (the reconciler is level-triggered: the next pass sees the rest)."""
        async with self.read_sessionmaker() as session:
            yield session

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A session whose work is committed at the end (jobs deferred after), rolled back on error."""
        async with self.sessionmaker() as session, unit_of_work(session) as s:
            yield s


@contextlib.asynccontextmanager
async def unit_of_work(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    buffer = jobs.open_buffer()
    try:
        yield session
    except AppError as error:
        # Some refusals must still keep what they recorded (a failed login counts even though it fails).
        if error.keep_transaction:
            await session.commit()
            await jobs.flush()
        else:
            await session.rollback()
        raise
    except BaseException:
        await session.rollback()
        raise
    else:
        await session.commit()
        await jobs.flush()
    finally:
        jobs.close_buffer(buffer)


READ_ONLY_ATTR = "__read_only_request__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def read_only(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint whose whole request (its dependencies too) only reads: its SessionDep is then the
    autocommit `reader()` session, with no BEGIN/COMMIT round trips (each query sees its own snapshot). A write
    made through it commits at once, on its own, so only a lone, self-contained write belongs there (an API
    key's last use); and no job may be deferred."""
    setattr(endpoint, READ_ONLY_ATTR, True)
    return endpoint


def is_read_only(request: Request) -> bool:
    return getattr(getattr(request.scope.get("route"), "endpoint", None), READ_ONLY_ATTR, False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    if is_read_only(request):
        async with database.reader() as session:
            yield session
        return
    async with database.unit_of_work() as session:
        yield session


# scope="function": commit before the response is sent. FastAPI's default ("request") runs the exit after the
# response, so a client could see 201 before the commit (its next request would not find the row, and a crash
# in between would lose a write the client was told succeeded).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
