"""Every query of subscriptions and their payments, and the entitlement's one question about invoices. Tenant
scoping for subscriptions lives here: customer routes name a subscription only together with its account."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import BindParameter, ScalarSelect, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from jushostit.billing.periods import month_of, next_month
from jushostit.models import (
    Account,
    BillingMode,
    CreditPurchase,
    DunningNotice,
    Invoice,
    InvoiceStatus,
    Payment,
    Plan,
    Subscription,
    UsageDaily,
)


def oldest_open_invoice_due(account_id: uuid.UUID | QueryableAttribute[uuid.UUID]) -> ScalarSelect[datetime]:
    """The due date of the account's oldest open invoice (null without one): from then on the account is past
    due. Correlated when given a column (the reconciler reads it for many accounts in one statement)."""
    return (
        select(func.min(Invoice.due_at))
        .where(Invoice.account_id == account_id, Invoice.status == InvoiceStatus.open.value)
        .scalar_subquery()
    )


def month_spend_of(account_id: uuid.UUID | QueryableAttribute[uuid.UUID], month: date | BindParameter[date],
                   until: date | BindParameter[date]) -> ScalarSelect[int]:
    """The account's usage charges in [month, until) from usage_daily (minor units; 0 without usage): the spend
    a budget is held against, computed from usage every time, never a counter kept beside it. Correlated when
    given a column."""
    return (
        select(func.coalesce(func.sum(UsageDaily.cost_minor), 0))
        .where(UsageDaily.account_id == account_id, UsageDaily.day >= month, UsageDaily.day < until)
        .scalar_subquery()
    )


class BillingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    async def lock_account(self, account_id: uuid.UUID) -> Account | None:
        """The account row, locked and freshly read: the one lock of an account's facts. Billing changes,
        orders (quota and name checks), membership changes and admin holds take it, so a pass reading the
        facts under it sees them all or none of them."""
        return await self.session.scalar(
            select(Account)
            .where(Account.id == account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )

    async def oldest_open_invoice_due(self, account_id: uuid.UUID) -> datetime | None:
        return await self.session.scalar(select(oldest_open_invoice_due(account_id)))

    async def month_spend(self, account_id: uuid.UUID, now: datetime) -> int:
        month = month_of(now)
        return int(await self.session.scalar(select(month_spend_of(account_id, month, next_month(month)))) or 0)

    async def open_subscription_to(
        self, account_id: uuid.UUID, plan_id: uuid.UUID, now: datetime
    ) -> Subscription | None:
        """A subscription of the account to the plan that is pending, or active with time left."""
        return await self.session.scalar(
            select(Subscription)
            .where(
                Subscription.account_id == account_id,
                Subscription.plan_id == plan_id,
                or_(
                    Subscription.status == "pending",
                    (Subscription.status == "active") & (Subscription.current_period_end > now),
                ),
            )
            .limit(1)
        )

    def _readable(self, account_id: uuid.UUID) -> Any:
        """The one tenant-scoped statement every customer read of subscriptions starts from."""
        return (
            select(Subscription, Plan)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(Subscription.account_id == account_id)
        )

    async def subscriptions(
        self, account_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
    ) -> list[tuple[Subscription, Plan]]:
        stmt = self._readable(account_id).order_by(Subscription.id).limit(limit)
        if after is not None:
            stmt = stmt.where(Subscription.id > after)
        return [(s, p) for s, p in (await self.session.execute(stmt)).all()]

    async def all_of(self, account_id: uuid.UUID) -> list[tuple[Subscription, Plan]]:
        stmt = self._readable(account_id).order_by(Subscription.id)
        return [(s, p) for s, p in (await self.session.execute(stmt)).all()]

    async def subscription_of(
        self, account_id: uuid.UUID, subscription_id: uuid.UUID
    ) -> tuple[Subscription, Plan] | None:
        stmt = self._readable(account_id).where(Subscription.id == subscription_id)
        row = (await self.session.execute(stmt.execution_options(populate_existing=True))).first()
        return (row[0], row[1]) if row else None

    async def subscription_by_id(self, subscription_id: uuid.UUID) -> tuple[Subscription, Plan] | None:
        """Any account's subscription: platform-admin routes only."""
        stmt = select(Subscription, Plan).join(Plan, Plan.id == Subscription.plan_id).where(
            Subscription.id == subscription_id
        )
        row = (await self.session.execute(stmt.execution_options(populate_existing=True))).first()
        return (row[0], row[1]) if row else None

    async def extend_period(
        self, subscription_id: uuid.UUID, *, seen_end: datetime, start: datetime, end: datetime
    ) -> Subscription | None:
        """Compare-and-set: extends only if the period still ends at `seen_end` and it is still active, so two
        renewals of the same period can never both apply (REFERENCE §1 F1). None when it lost the race."""
        stmt = (
            update(Subscription)
            .where(
                Subscription.id == subscription_id,
                Subscription.status == "active",
                Subscription.current_period_end == seen_end,
            )
            .values(current_period_start=start, current_period_end=end, cancel_at_period_end=False)
            .returning(Subscription)
            .execution_options(populate_existing=True)
        )
        return await self.session.scalar(stmt)

    async def claim_period(
        self,
        subscription: Subscription,
        *,
        period_start: datetime,
        period_end: datetime,
        amount_minor: int,
        currency: str,
        source: str,
        external_reference: str | None,
        recorded_by: uuid.UUID | None,
    ) -> bool:
        """Record the payment of the period starting at `period_start`: INSERT … ON CONFLICT DO NOTHING on
        (subscription, period_start). False when that period is paid already — a concurrent report of it is
        waited for, and counts once it commits (REFERENCE §1 F1)."""
        stmt = (
            insert(Payment)
            .values(
                subscription_id=subscription.id, account_id=subscription.account_id,
                provider=subscription.provider, period_start=period_start, period_end=period_end,
                amount_minor=amount_minor, currency=currency, source=source,
                external_reference=external_reference, recorded_by=recorded_by,
            )
            .on_conflict_do_nothing(index_elements=[Payment.subscription_id, Payment.period_start])
            .returning(Payment.id)
        )
        return await self.session.scalar(stmt) is not None

    async def is_paid(self, subscription_id: uuid.UUID, period_start: datetime) -> bool:
        paid = exists().where(Payment.subscription_id == subscription_id, Payment.period_start == period_start)
        return bool(await self.session.scalar(select(paid)))

    async def paid_period_starts(
        self, subscription_id: uuid.UUID, *, after: datetime, before: datetime
    ) -> list[datetime]:
        """The starts of the paid periods strictly between `after` and `before`, in order."""
        stmt = (
            select(Payment.period_start)
            .where(
                Payment.subscription_id == subscription_id,
                Payment.period_start > after,
                Payment.period_start < before,
            )
            .order_by(Payment.period_start)
        )
        return cast(list[datetime], list(await self.session.scalars(stmt)))  # compared, so never null

    async def activate_pending(
        self, subscription_id: uuid.UUID, *, start: datetime, end: datetime
    ) -> Subscription | None:
        """Compare-and-set pending → active; None when it is not pending (any more)."""
        stmt = (
            update(Subscription)
            .where(Subscription.id == subscription_id, Subscription.status == "pending")
            .values(status="active", current_period_start=start, current_period_end=end)
            .returning(Subscription)
            .execution_options(populate_existing=True)
        )
        return await self.session.scalar(stmt)

    async def claim_expiry_notices(self, now: datetime, horizon: datetime) -> list[tuple[uuid.UUID, datetime]]:
        """Active subscriptions that end within the horizon and will not renew by themselves (manual provider
        or cancelling at period end), whose notice for this period is not sent yet. Claimed by compare-and-set,
        so two sweeps never send it twice. Returns (account, period end)."""
        rows = await self.session.execute(
            update(Subscription)
            .where(
                Subscription.status == "active",
                Subscription.current_period_end > now,
                Subscription.current_period_end <= horizon,
                (Subscription.provider == "manual") | Subscription.cancel_at_period_end,
                Subscription.expiry_notice_for.is_distinct_from(Subscription.current_period_end),
            )
            .values(expiry_notice_for=Subscription.current_period_end)
            .returning(Subscription.account_id, Subscription.current_period_end)
        )
        return [(account_id, ends) for account_id, ends in rows.all()]

    async def claim_dunning_notice(self, account_id: uuid.UUID, episode: datetime, kind: str, step: int,
                                   now: datetime) -> bool:
        """Whether this notice of the episode is ours to send: inserted or ignored, so it goes out once."""
        claimed = await self.session.scalar(
            insert(DunningNotice)
            .values(account_id=account_id, episode=episode, kind=kind, step=step, sent_at=now)
            .on_conflict_do_nothing()
            .returning(DunningNotice.kind)
        )
        return claimed is not None

    async def dunning_notice_sent(self, account_id: uuid.UUID, episode: datetime, kind: str) -> bool:
        return bool(await self.session.scalar(select(exists().where(
            DunningNotice.account_id == account_id, DunningNotice.episode == episode, DunningNotice.kind == kind,
        ))))

    async def open_dunning_episode(self, account_id: uuid.UUID, episode: datetime) -> None:
        await self.session.execute(update(Account).where(Account.id == account_id).values(dunning_episode=episode))

    async def close_dunning_episode(self, account_id: uuid.UUID, episode: datetime) -> bool:
        """Compare-and-set: True for the one caller that ends this episode."""
        closed = await self.session.scalar(
            update(Account)
            .where(Account.id == account_id, Account.dunning_episode == episode)
            .values(dunning_episode=None)
            .returning(Account.id)
        )
        return closed is not None

    async def accounts_with_contract_periods_due(
        self, provider: str, *, now: datetime, horizon: datetime
    ) -> list[uuid.UUID]:
        """Prepaid accounts whose running contract pays a subscription (of `provider`) whose period ends by
        `horizon` (or has lapsed) and which the contract still covers at that end."""
        stmt = (
            select(Subscription.account_id)
            .join(Account, Account.id == Subscription.account_id)
            .where(
                Subscription.provider == provider,
                Subscription.status == "active",
                Subscription.cancel_at_period_end.is_(False),
                Subscription.current_period_end <= horizon,
                Account.billing_mode == BillingMode.prepaid,
                Account.contract_ends_at > now,
                Account.contract_ends_at > Subscription.current_period_end,
            )
            .distinct()
        )
        return list((await self.session.scalars(stmt)).all())

    async def cancel(self, subscription_id: uuid.UUID, *, now: datetime | None) -> Subscription | None:
        """Cancel at `now`, or at period end when `now` is None; None when it was already cancelled."""
        values: dict[str, Any] = (
            {"status": "cancelled", "cancelled_at": now} if now is not None else {"cancel_at_period_end": True}
        )
        stmt = (
            update(Subscription)
            .where(Subscription.id == subscription_id, Subscription.status != "cancelled")
            .values(**values)
            .returning(Subscription)
            .execution_options(populate_existing=True)
        )
        return await self.session.scalar(stmt)

    async def cancel_pending(self, subscription_id: uuid.UUID, *, now: datetime) -> Subscription | None:
        """Cancel a subscription that is still pending (its checkout lapsed); None when it is not pending."""
        return await self.session.scalar(
            update(Subscription)
            .where(Subscription.id == subscription_id, Subscription.status == "pending")
            .values(status="cancelled", cancelled_at=now)
            .returning(Subscription)
            .execution_options(populate_existing=True)
        )

    async def record_checkout(
        self, subscription_id: uuid.UUID, *, session_id: str | None, url: str | None, expires_at: datetime | None,
        price_id: str | None,
    ) -> Subscription | None:
        """Keep a pending subscription's hosted checkout, once; None when it has one or is no longer pending."""
        values: dict[str, Any] = {"checkout_session_id": session_id, "checkout_url": url}
        if price_id is not None:
            values["stripe_price_id"] = price_id
        if expires_at is not None:
            values["checkout_expires_at"] = expires_at
        return await self.session.scalar(
            update(Subscription)
            .where(
                Subscription.id == subscription_id, Subscription.status == "pending",
                Subscription.checkout_session_id.is_(None),
            )
            .values(**values)
            .returning(Subscription)
            .execution_options(populate_existing=True)
        )

    async def subscription_by_external_id(self, external_id: str) -> tuple[Subscription, Plan] | None:
        stmt = select(Subscription, Plan).join(Plan, Plan.id == Subscription.plan_id).where(
            Subscription.external_id == external_id
        )
        row = (await self.session.execute(stmt.execution_options(populate_existing=True))).first()
        return (row[0], row[1]) if row else None

    async def provider_subscriptions_to_check(
        self, provider: str, *, after: uuid.UUID | None, limit: int
    ) -> list[tuple[uuid.UUID, uuid.UUID, str | None, str | None]]:
        """(id, account id, external id, checkout session id) of the provider's subscriptions that can still
        change there: pending ones with a checkout, and active ones. In id order, a page at a time."""
        stmt = (
            select(Subscription.id, Subscription.account_id, Subscription.external_id,
                   Subscription.checkout_session_id)
            .where(
                Subscription.provider == provider,
                or_(
                    (Subscription.status == "pending") & Subscription.checkout_session_id.is_not(None),
                    Subscription.status == "active",
                ),
            )
            .order_by(Subscription.id)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(Subscription.id > after)
        return [(row[0], row[1], row[2], row[3]) for row in await self.session.execute(stmt)]

    # --- credit pack purchases -------------------------------------------------------------------------------

    async def add_purchase(self, purchase: CreditPurchase) -> CreditPurchase:
        self.session.add(purchase)
        await self.session.flush()
        return purchase

    async def purchase_of(self, account_id: uuid.UUID, purchase_id: uuid.UUID) -> CreditPurchase | None:
        return await self.session.scalar(select(CreditPurchase).where(
            CreditPurchase.id == purchase_id, CreditPurchase.account_id == account_id))

    async def purchase(self, purchase_id: uuid.UUID) -> CreditPurchase | None:
        return await self.session.get(CreditPurchase, purchase_id, populate_existing=True)

    async def purchases(self, account_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> list[CreditPurchase]:
        stmt = (select(CreditPurchase).where(CreditPurchase.account_id == account_id)
                .order_by(CreditPurchase.id).limit(limit))
        if after is not None:
            stmt = stmt.where(CreditPurchase.id > after)
        return list((await self.session.scalars(stmt)).all())

    async def record_pack_checkout(self, purchase_id: uuid.UUID, *, session_id: str | None,
                                   url: str | None) -> None:
        await self.session.execute(
            update(CreditPurchase)
            .where(CreditPurchase.id == purchase_id, CreditPurchase.checkout_session_id.is_(None))
            .values(checkout_session_id=session_id, checkout_url=url)
        )

    async def settle_purchase(self, purchase_id: uuid.UUID, *, status: str, reference: str | None,
                              now: datetime) -> CreditPurchase | None:
        """Compare-and-set pending → `status` (paid or expired): the one caller that settles it gets the row."""
        values: dict[str, Any] = {"status": status}
        if status == "paid":
            values |= {"paid_at": now, "payment_reference": reference}
        return await self.session.scalar(
            update(CreditPurchase)
            .where(CreditPurchase.id == purchase_id, CreditPurchase.status == "pending")
            .values(**values)
            .returning(CreditPurchase)
            .execution_options(populate_existing=True)
        )

    async def pending_pack_checkouts(
        self, provider: str, *, after: uuid.UUID | None, limit: int
    ) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
        """(id, account id, checkout session id) of the provider's pack purchases still waiting for payment."""
        stmt = (
            select(CreditPurchase.id, CreditPurchase.account_id, CreditPurchase.checkout_session_id)
            .where(CreditPurchase.provider == provider, CreditPurchase.status == "pending",
                   CreditPurchase.checkout_session_id.is_not(None))
            .order_by(CreditPurchase.id)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(CreditPurchase.id > after)
        return [(row[0], row[1], row[2] or "") for row in await self.session.execute(stmt)]
