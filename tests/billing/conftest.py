from __future__ import annotations

import uuid
from typing import Any

import pytest

from jushostit.models import User


@pytest.fixture
def admin(session, signup) -> Any:
    """A platform admin (the flag on the user, set the way an operator would: in the database)."""

    async def make() -> Any:
        who = await signup(account_name="Platform")
        user = await session.get(User, uuid.UUID(who.user_id))
        user.is_platform_admin = True
        await session.flush()
        return who

    return make
