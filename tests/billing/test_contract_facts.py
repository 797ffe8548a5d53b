"""Both loaders of the entitlement facts, the one for one account (the API) and the reconciler's batched snapshot,
carry a prepaid account's contract end, so the API and the reconciler hold the same account at the same instant;
a contract no longer counts once the account is billed another way."""

from __future__ import annotations

import uuid
from datetime import timedelta

from jushostit.billing.facts import load_entitlement_inputs
from jushostit.kit.db import utcnow
from jushostit.models import Account, BillingMode
from jushostit.reconcile.service import snapshots


async def test_both_loaders_hold_a_prepaid_account_past_its_contract_end_and_no_other(session, settings, signup) -> None:
    owner = await signup()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    assert account is not None
    now = utcnow()
    account.billing_mode, account.contract_ref = BillingMode.prepaid, "77001"
    account.contract_ends_at = now - timedelta(minutes=1)
    await session.flush()

    async def holds() -> tuple[frozenset[str], frozenset[str]]:
        one = (await load_entitlement_inputs(session, account, now=now)).decide(now)
        batched = (await snapshots(session, settings, [account.id], now))[account.id]
        return one.holds, batched.entitled.holds

    assert await holds() == (frozenset({"contract"}), frozenset({"contract"}))
    account.billing_mode = BillingMode.invoice  # an operator moved it off the contract
    await session.flush()
    assert await holds() == (frozenset(), frozenset())
