"""Read-only views of rows: what a reader needs of an account, a subscription or a plan, satisfied by the ORM
objects and by plain rows of those columns alike (the resync reads thousands and skips the ORM)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from jushostit.models.account import AccountStatus, BillingMode


class AccountFactsRow(Protocol):
    """What the entitlement facts need of an account."""

    @property
    def status(self) -> AccountStatus: ...
    @property
    def billing_mode(self) -> BillingMode: ...
    @property
    def suspension_reasons(self) -> list[str]: ...
    @property
    def past_due_since(self) -> datetime | None: ...
    @property
    def budget_minor(self) -> int | None: ...
    @property
    def dunning_policy(self) -> Mapping[str, Any] | None: ...
    @property
    def contract_ends_at(self) -> datetime | None: ...


class DunningRecipient(Protocol):
    """What a dunning e-mail needs of an account, and the episode its e-mails last went out for."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def billing_email(self) -> str | None: ...
    @property
    def dunning_episode(self) -> datetime | None: ...


class SubscriptionFactsRow(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def status(self) -> str: ...
    @property
    def current_period_start(self) -> datetime: ...
    @property
    def current_period_end(self) -> datetime: ...
    @property
    def cancelled_at(self) -> datetime | None: ...
    @property
    def quotas(self) -> Mapping[str, Any]: ...


class PlanFactsRow(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def quotas(self) -> Mapping[str, Any]: ...
