"""Database engine, sessions and the request-scoped unit of work.

The request dependency commits on success and rolls back on error; jobs buffered during the request are
deferred only after the commit and dropped on rollback (REFERENCE §5, §10).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, TypeDecorator
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


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


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
        async with self.sessionmaker() as session:
            async with unit_of_work(session) as s:
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


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    async with database.unit_of_work() as session:
        yield session


# scope="function": commit before the response is sent. FastAPI's default ("request") runs the exit after the
# response, so a client could see 201 before the commit (its next request would not find the row, and a crash
# in between would lose a write the client was told succeeded).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
