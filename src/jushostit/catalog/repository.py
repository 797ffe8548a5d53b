"""Every query of plans and service templates."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import literal_column, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from jushostit.kit.ids import new_id
from jushostit.models import Plan, ServiceTemplate


class CatalogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    # plans -------------------------------------------------------------------------------------------------
    async def insert_plan_if_missing(self, values: dict[str, Any]) -> uuid.UUID | None:
        """Insert a plan unless its code exists (never touching the existing one); the new id, or None."""
        stmt = (
            insert(Plan)
            .values(id=new_id(), **values)
            .on_conflict_do_nothing(index_elements=[Plan.code])
            .returning(Plan.id)
        )
        return await self.session.scalar(stmt)

    async def plan_by_code(self, code: str, *, for_update: bool = False) -> Plan | None:
        stmt = select(Plan).where(Plan.code == code)
        if for_update:
            stmt = stmt.with_for_update()
        return await self.session.scalar(stmt)

    async def plan_for_price(self, price_ref: str, plan_version: tuple[str, int] | None) -> Plan | None:
        """The plan a payment provider's price sells: the plan an admin linked it to, or the plan version it was
        made for (its lookup key), while that version is the plan's current one."""
        linked = await self.session.scalar(select(Plan).where(Plan.stripe_price_id == price_ref))
        if linked is not None or plan_version is None:
            return linked
        code, version = plan_version
        return await self.session.scalar(select(Plan).where(Plan.code == code, Plan.version == version))

    async def plans(self, *, include_retired: bool, after: str | None, limit: int) -> list[Plan]:
        stmt = select(Plan).order_by(Plan.code).limit(limit)
        if not include_retired:
            stmt = stmt.where(Plan.retired_at.is_(None))
        if after is not None:
            stmt = stmt.where(Plan.code > after)
        return list((await self.session.scalars(stmt)).all())

    # templates ---------------------------------------------------------------------------------------------
    async def upsert_builtin_template(self, code: str, kind: str, spec: dict[str, Any]) -> bool | None:
        """Insert or update a shipped template. True: inserted; False: updated; None: already identical."""
        new = insert(ServiceTemplate).values(id=new_id(), code=code, kind=kind, spec=spec, source="builtin")
        stmt: Executable = new.on_conflict_do_update(
            index_elements=[ServiceTemplate.code],
            set_={"kind": new.excluded.kind, "spec": new.excluded.spec, "source": new.excluded.source},
            where=or_(
                ServiceTemplate.spec.is_distinct_from(new.excluded.spec),
                ServiceTemplate.kind.is_distinct_from(new.excluded.kind),
                ServiceTemplate.source.is_distinct_from(new.excluded.source),
            ),
        ).returning(literal_column("xmax = 0").label("inserted"))
        row = (await self.session.execute(stmt)).first()
        return None if row is None else bool(row.inserted)

    async def insert_template_if_missing(
        self, code: str, kind: str, spec: dict[str, Any], source: str
    ) -> uuid.UUID | None:
        stmt = (
            insert(ServiceTemplate)
            .values(id=new_id(), code=code, kind=kind, spec=spec, source=source)
            .on_conflict_do_nothing(index_elements=[ServiceTemplate.code])
            .returning(ServiceTemplate.id)
        )
        return await self.session.scalar(stmt)

    async def template_by_code(self, code: str) -> ServiceTemplate | None:
        return await self.session.scalar(select(ServiceTemplate).where(ServiceTemplate.code == code))

    async def templates(self, *, include_retired: bool, after: str | None, limit: int) -> list[ServiceTemplate]:
        stmt = select(ServiceTemplate).order_by(ServiceTemplate.code).limit(limit)
        if not include_retired:
            stmt = stmt.where(ServiceTemplate.retired_at.is_(None))
        if after is not None:
            stmt = stmt.where(ServiceTemplate.code > after)
        return list((await self.session.scalars(stmt)).all())
