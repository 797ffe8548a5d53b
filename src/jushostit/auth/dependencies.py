"""Authentication and the route rules every endpoint must declare.

Each route depends on exactly one of `public()`, `require_user()`, `require_account()` or `require_admin()`.
They tag themselves with `AUTH_RULE_ATTR`; the app refuses to start with a route that declares none, and the
authorization-matrix test checks each rule's promise over the live OpenAPI.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from jushostit import container
from jushostit.auth.repository import AuthRepository
from jushostit.auth.scopes import API_KEY_PREFIX, Scope
from jushostit.auth.service import refuse_suspended
from jushostit.auth.tokens import read_access_token
from jushostit.kit import context
from jushostit.kit.crypto import token_hash
from jushostit.kit.db import SessionDep, utcnow
from jushostit.kit.errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from jushostit.models import Account, Role, User

AUTH_RULE_ATTR = "__auth_rule__"


class AuthRule(enum.StrEnum):
    public = "public"
    user = "user"
    account = "account"
    admin = "admin"


ROLE_RANK = {Role.member: 0, Role.admin: 1, Role.owner: 2}


@dataclass(frozen=True)
class Principal:
    user: User
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    scopes: frozenset[str] | None = None  # None: a signed-in session, which holds every scope

    def has(self, scope: Scope | None) -> bool:
        return scope is None or self.scopes is None or scope.value in self.scopes


@dataclass(frozen=True)
class AccountAccess:
    principal: Principal
    account: Account
    role: Role

    @property
    def can_see_billing(self) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[Role.admin]


def declare_rule(dependency: Callable[..., Awaitable[Any]], rule: AuthRule) -> Callable[..., Awaitable[Any]]:
    setattr(dependency, AUTH_RULE_ATTR, rule)
    return dependency


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)


async def authenticate(request: Request, session: SessionDep) -> Principal | None:
    """The caller of a valid token or API key, None without one; a suspended user is refused (401)."""
    token = _bearer(request)
    if token is None:
        return None
    repository = AuthRepository(session)
    now = utcnow()
    user: User | None
    if token.startswith(API_KEY_PREFIX):
        found = await repository.active_api_key(token_hash(token), now)
        if found is None:
            return None
        key, user = found
        refuse_suspended(user)
        if key.last_used_at is None or now - key.last_used_at > API_KEY_TOUCH_INTERVAL:
            await repository.touch_api_key(key, now)
        principal = Principal(user, api_key_id=key.id, scopes=frozenset(key.scopes))
        context.actor.set(context.Actor("api_key", user.id))
    else:
        claims = read_access_token(container.current().jwt_secret, token)
        if claims is None:
            return None
        user = await repository.user_with_live_session(claims.user_id, claims.session_id)
        if user is None:
            return None
        refuse_suspended(user)
        principal = Principal(user, session_id=claims.session_id)
        context.actor.set(context.Actor("user", user.id))
    return principal


_limiter = MovingWindowRateLimiter(MemoryStorage())


def public(*, rate_limit: bool = False) -> Callable[..., Awaitable[None]]:
    """No authentication. Auth endpoints pass rate_limit=True: per client IP, per route, per replica."""

    async def dependency(request: Request) -> None:
        if not rate_limit:
            return
        item = parse(container.current().settings.auth_rate_limit)
        route = request.scope.get("route")
        key = (context.client_ip.get() or "unknown", getattr(route, "path", request.url.path))
        if not await _limiter.hit(item, *key):
            stats = await _limiter.get_window_stats(item, *key)
            retry_after = int(stats.reset_time - utcnow().timestamp()) + 1
            raise TooManyRequests("Too many requests; slow down", retry_after=retry_after)

    return declare_rule(dependency, AuthRule.public)


async def authenticated(request: Request, session: SessionDep) -> Principal:
    """The caller, or 401."""
    principal = await authenticate(request, session)
    if principal is None:
        raise Unauthorized("Authentication required")
    return principal


def check_account_access(principal: Principal, role: Role, scope: Scope, min_role: Role) -> None:
    """For a member of the account (non-members were already answered 404): the key's scope and the role."""
    if not principal.has(scope):
        raise Forbidden(f"API key lacks the scope {scope}", code="insufficient_scope")
    if ROLE_RANK[role] < ROLE_RANK[min_role]:
        raise Forbidden(f"This needs the {min_role} role in the account", code="insufficient_role")


def check_email_verified(principal: Principal) -> None:
    """Spending money, minting keys and inviting people wait until the address is proven."""
    if not principal.user.email_verified:
        raise Forbidden(
            "Confirm your e-mail address first: open the link we e-mailed you, or ask for a new one with "
            "POST /v1/auth/verify-email/resend",
            code="email_unverified",
        )


def require_user(scope: Scope | None = None, *, session_only: bool = False) -> Callable[..., Awaitable[Principal]]:
    """A signed-in user (session) or an API key holding `scope`. session_only refuses API keys."""

    async def dependency(request: Request, session: SessionDep) -> Principal:
        principal = await authenticated(request, session)
        if session_only and principal.api_key_id is not None:
            raise Forbidden("This action needs a signed-in session, not an API key", code="session_required")
        if not principal.has(scope):
            raise Forbidden(f"API key lacks the scope {scope}", code="insufficient_scope")
        return principal

    return declare_rule(dependency, AuthRule.user)


def require_account(scope: Scope, min_role: Role = Role.member) -> Callable[..., Awaitable[AccountAccess]]:
    """A member of the account in the path. Non-members get 404, as if the account did not exist."""

    async def dependency(request: Request, session: SessionDep, account_id: uuid.UUID) -> AccountAccess:
        principal = await authenticated(request, session)
        found = await AuthRepository(session).membership(principal.user.id, account_id)
        if found is None:
            raise NotFound("Account not found")
        account, role = found
        check_account_access(principal, role, scope, min_role)
        return AccountAccess(principal, account, role)

    return declare_rule(dependency, AuthRule.account)


def require_admin() -> Callable[..., Awaitable[Principal]]:
    """A platform admin (a flag on the user, not an account role); API keys need the admin scope too."""

    async def dependency(request: Request, session: SessionDep) -> Principal:
        principal = await authenticated(request, session)
        if not principal.user.is_platform_admin or not principal.has(Scope.admin):
            raise Forbidden("Platform admin only", code="admin_required")
        return principal

    return declare_rule(dependency, AuthRule.admin)


# A route for platform admins that reads who the admin is.
PlatformAdmin = Annotated[Principal, Depends(require_admin())]


def rule_dependency(dependant: Any) -> Callable[..., Any] | None:
    """The dependency that declared the route's auth rule, found anywhere in its dependency tree."""
    call = dependant.call
    if call is not None and getattr(call, AUTH_RULE_ATTR, None) is not None:
        return call
    for sub in dependant.dependencies:
        found = rule_dependency(sub)
        if found is not None:
            return found
    return None


def route_rule(dependant: Any) -> AuthRule | None:
    """The auth rule a route declared, found anywhere in its dependency tree."""
    return getattr(rule_dependency(dependant), AUTH_RULE_ATTR, None)
