"""Sign-up, sign-in (password, magic link, OIDC), token rotation, logout and API keys. Never commits."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from pwdlib import PasswordHash
from sqlalchemy import String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.accounts import service as accounts_service
from jushostit.accounts.repository import AccountRepository
from jushostit.audit import service as audit
from jushostit.auth.passwords import hasher_for, password_problem
from jushostit.auth.repository import AuthRepository
from jushostit.auth.schemas import ApiKeyCreate, Revoked, TokenPair
from jushostit.auth.scopes import API_KEY_PREFIX, Scope
from jushostit.auth.tokens import AccessClaims, issue_access_token
from jushostit.billing.hubspot import DealOutcome, hubspot_crm
from jushostit.config import Settings
from jushostit.kit import context
from jushostit.kit.crypto import new_token, token_hash
from jushostit.kit.db import utcnow
from jushostit.kit.email_address import normalize_email
from jushostit.kit.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized
from jushostit.models import (
    ApiKey,
    AuthSession,
    AuthThrottle,
    BillingMode,
    EmailToken,
    EmailTokenPurpose,
    MagicLink,
    OIDCIdentity,
    RefreshToken,
    Role,
    User,
)
from jushostit.notifications.service import address_has_room, queue_email


@dataclass(frozen=True)
class AuthConfig:
    settings: Settings
    jwt_secret: str

    @property
    def hasher(self) -> PasswordHash:
        return hasher_for(self.settings)

    # argon2 takes ~100 ms of CPU by design: off the event loop, so one sign-in never stalls every request.
    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def password_matches(self, password: str, hashed: str | None) -> bool:
        """An unknown user (no hash) costs a hash too, so timing does not reveal which addresses exist."""
        hasher = self.hasher
        outcome = await asyncio.to_thread(hasher.verify, password, hashed or _dummy_hash(hasher))
        return outcome and hashed is not None


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    keep_transaction = True  # the failure count must survive the refusal


class InvalidToken(Unauthorized):
    code = "invalid_token"


class UserSuspended(Unauthorized):
    code = "user_suspended"


def refuse_suspended(user: User) -> None:
    """A platform admin suspended this user: no sign-in, no token, no API key works until unsuspended."""
    if user.suspended_at is not None:
        raise UserSuspended("This user is suspended; contact the platform's operators")


class RefreshTokenReused(Unauthorized):
    code = "refresh_token_reused"
    keep_transaction = True  # the revoked family must stay revoked


# --- sessions and tokens -----------------------------------------------------------------------------------


async def start_session(session: AsyncSession, config: AuthConfig, user: User, *, method: str) -> TokenPair:
    refuse_suspended(user)  # every way in (password, magic link, reset, OIDC) ends here
    now = utcnow()
    auth_session = AuthSession(user_id=user.id, method=method)
    await AuthRepository(session).add(auth_session)
    user.last_login_at = now
    return await _issue_tokens(session, config, user.id, auth_session.id, now)


async def _issue_tokens(
    session: AsyncSession, config: AuthConfig, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime
) -> TokenPair:
    refresh_plain = new_token("jhr_")
    await AuthRepository(session).add(
        RefreshToken(
            session_id=session_id,
            token_hash=token_hash(refresh_plain),
            expires_at=now + timedelta(seconds=config.settings.refresh_token_ttl_seconds),
        )
    )
    ttl = config.settings.access_token_ttl_seconds
    access = issue_access_token(config.jwt_secret, AccessClaims(user_id, session_id), now=now, ttl_seconds=ttl)
    return TokenPair(access_token=access, refresh_token=refresh_plain, expires_in=ttl)


async def refresh(session: AsyncSession, config: AuthConfig, *, refresh_token: str) -> TokenPair:
    """Rotate: the presented token is spent and a new one issued. A spent token presented again means it
    leaked, so the whole family (the login session) is revoked."""
    repository = AuthRepository(session)
    now = utcnow()
    found = await repository.refresh_token_for_update(token_hash(refresh_token))
    if found is None:
        raise InvalidToken("Invalid refresh token")
    token, auth_session = found
    if token.rotated_at is not None:
        if await repository.revoke_session(auth_session.id, now, "refresh_token_reused"):
            await audit.record(
                session,
                action="auth.refresh_token_reused",
                target_type="auth_session",
                target_id=auth_session.id,
                actor=context.Actor("user", auth_session.user_id),
            )
        raise RefreshTokenReused("Refresh token was already used; the session has been revoked")
    if auth_session.revoked_at is not None or token.expires_at <= now:
        raise InvalidToken("Refresh token expired or revoked")
    user = await repository.user_by_id(auth_session.user_id)
    assert user is not None  # sessions are deleted with their user
    refuse_suspended(user)
    token.rotated_at = now
    return await _issue_tokens(session, config, auth_session.user_id, auth_session.id, now)


async def logout(session: AsyncSession, *, session_id: uuid.UUID) -> None:
    if await AuthRepository(session).revoke_session(session_id, utcnow(), "logout"):
        await audit.record(session, action="auth.logout", target_type="auth_session", target_id=session_id)


# --- sign-up and password sign-in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """The prepaid contract a corporate sign-up brings: its won CRM deal and when it ends."""

    ref: str
    ends_at: datetime


CONTRACT_REF_UNIQUE = "uq_accounts_contract_ref"


def _constraint_of(error: IntegrityError) -> str | None:
    return getattr(getattr(error.orig, "diag", None), "constraint_name", None)


def _contract_in_use(ref: str) -> Conflict:
    return Conflict(f"The deal {ref} already has an account", code="corporate_ref_used")


async def corporate_contract(config: AuthConfig, corporate_ref: str) -> Contract:
    """The contract a corporate sign-up names: a HubSpot deal that exists, is won, and whose contract end is still
    ahead. Calls HubSpot, so it is asked before the sign-up opens a database transaction."""
    crm = hubspot_crm(config.settings)
    if crm is None:
        raise Conflict("Corporate sign-up is not available here: no CRM is configured",
                       code="corporate_contracts_not_configured")
    deal = await crm.deal(corporate_ref)
    if deal is None:
        raise BadRequest(f"No deal {corporate_ref} was found", code="unknown_corporate_ref")
    if deal.outcome != DealOutcome.won:
        raise Conflict(f"The deal {deal.id} is not won ({deal.outcome.value})", code="corporate_ref_not_won",
                       details={"outcome": deal.outcome.value})
    if deal.contract_ends_at is None:
        raise Conflict(f"The deal {deal.id} has no contract end", code="corporate_ref_without_contract_end",
                       details={"property": crm.contract_end_property})
    if deal.contract_ends_at <= utcnow():
        raise Conflict(f"The contract of deal {deal.id} has ended", code="corporate_contract_ended",
                       details={"contract_ends_at": deal.contract_ends_at.isoformat()})
    return Contract(deal.id, deal.contract_ends_at)


async def signup(
    session: AsyncSession, config: AuthConfig, *, email: str, password: str, account_name: str,
    contract: Contract | None = None,
) -> None:
    """Create an unverified user and their account, and e-mail a confirmation link. The answer is the same
    whether or not the address already has a user (no account enumeration): an existing owner gets an e-mail
    saying someone tried, and nothing changes. With a `contract` (checked with the CRM beforehand) the account
    is prepaid by it; a deal that made an account already makes no other (409 `corporate_ref_used`, whoever
    asks, so it tells nothing about the address)."""
    email = normalize_email(email)
    _check_password(config, password, email=email)
    hashed = await config.hash_password(password)  # both ways, so timing does not tell them apart either
    if contract is not None and await AccountRepository(session).contract_taken(contract.ref):
        raise _contract_in_use(contract.ref)
    repository = AuthRepository(session)
    user: User | None = None
    if await repository.user_by_email(email) is None:
        user = User(email=email, password_hash=hashed)
        try:
            async with session.begin_nested():
                await repository.add(user)
        except IntegrityError:  # a concurrent sign-up with the same address won the unique constraint
            user = None
    if user is None:
        if await _room_for(session, config, email):
            await queue_email(session, to=email, template="signup_existing",
                              values={"base_url": config.settings.base_url})
        return
    context.actor.set(context.Actor("user", user.id))
    try:
        account = await accounts_service.create_account(
            session, owner=user, name=account_name,
            billing_mode=BillingMode.prepaid if contract else BillingMode(config.settings.new_account_billing_mode),
            contract_ref=contract.ref if contract else None, contract_ends_at=contract.ends_at if contract else None,
        )
    except IntegrityError as error:
        if contract is not None and _constraint_of(error) == CONTRACT_REF_UNIQUE:  # a concurrent sign-up won the deal
            raise _contract_in_use(contract.ref) from error
        raise
    corporate = {"corporate_ref": contract.ref} if contract else {}
    await audit.record(session, action="user.signup", target_type="user", target_id=user.id, account_id=account.id,
                       after={"email": email, "account_name": account.name, **corporate})
    await _send_verification(session, config, user, account_name=account.name)


def _check_password(config: AuthConfig, password: str, *, email: str) -> None:
    settings = config.settings
    problem = password_problem(password, email=email, min_length=settings.password_min_length,
                               min_score=settings.password_min_score)
    if problem:
        raise BadRequest(problem, code="weak_password")


# Templates that e-mail a link on request of anyone who knows the address: at most so many per address per hour.
ADDRESS_LIMITED_TEMPLATES = frozenset({"verify_email", "signup_existing", "magic_link", "password_reset"})


async def _room_for(session: AsyncSession, config: AuthConfig, address: str) -> bool:
    return await address_has_room(session, to=address, templates=ADDRESS_LIMITED_TEMPLATES,
                                  per_hour=config.settings.emails_per_address_per_hour)


async def _email_token(
    session: AsyncSession, user: User, purpose: EmailTokenPurpose, ttl_seconds: int, prefix: str
) -> str:
    token = new_token(prefix)
    await AuthRepository(session).add(
        EmailToken(user_id=user.id, purpose=purpose.value, token_hash=token_hash(token),
                   expires_at=utcnow() + timedelta(seconds=ttl_seconds))
    )
    return token


async def _send_verification(session: AsyncSession, config: AuthConfig, user: User, *, account_name: str) -> None:
    settings = config.settings
    if not await _room_for(session, config, user.email):
        return
    ttl = settings.email_verification_ttl_seconds
    token = await _email_token(session, user, EmailTokenPurpose.verify_email, ttl, "jhv_")
    await queue_email(session, to=user.email, template="verify_email", values={
        "account_name": account_name, "hours": str(ttl // 3600), "base_url": settings.base_url,
        "link": f"{settings.base_url}/auth/verify-email?token={token}",
    })


async def resend_verification(session: AsyncSession, config: AuthConfig, *, user: User) -> None:
    if user.email_verified:
        raise Conflict("This address is already verified", code="already_verified")
    memberships = await AuthRepository(session).memberships_of(user.id)
    owned = [account.name for account, role in memberships if role == Role.owner]
    await _send_verification(session, config, user, account_name=owned[0] if owned else user.email)


async def verify_email(session: AsyncSession, *, token: str) -> User:
    """The mailbox owner confirms the sign-up made with their address (single use, expiring)."""
    repository = AuthRepository(session)
    user_id = await repository.consume_email_token(token_hash(token), EmailTokenPurpose.verify_email, utcnow())
    user = await repository.user_by_id(user_id) if user_id else None
    if user is None:
        raise InvalidToken("This confirmation link is invalid, expired or already used")
    if not user.email_verified:
        user.email_verified = True
        await audit.record(session, action="user.email_verified", target_type="user", target_id=user.id,
                           actor=context.Actor("user", user.id))
    return user


# Failures further apart than this do not add up (a shared office IP is not locked forever).
FAILURE_STREAK_WINDOW = timedelta(hours=1)


def _throttle_key(kind: str, value: str) -> str:
    """`kind:value`, readable; a value too long for the key column (an address can be 254 characters) is
    keyed by its SHA-256 instead, under its own prefix so it never collides with a readable key."""
    key = f"{kind}:{value}"
    if len(key) <= (cast(String, AuthThrottle.__table__.c.key.type).length or 0):
        return key
    return f"{kind}-sha256:{hashlib.sha256(value.encode()).hexdigest()}"


def _lock_delay(failures: int, settings: Settings) -> int:
    """Seconds to refuse sign-in after `failures` in a row: none until the threshold, then doubling."""
    over = failures - settings.login_failures_before_delay
    if over < 0:
        return 0
    return min(2**over, settings.login_max_delay_seconds)


def _sign_in_address(email: str) -> str:
    """The address as sign-up stored it (same normalisation); anything that is no address stays as typed, and
    simply matches no user."""
    try:
        return normalize_email(email)
    except BadRequest:
        return email.strip().lower()


async def login(session: AsyncSession, config: AuthConfig, *, email: str, password: str) -> TokenPair:
    """Three failure streaks, counted apart: the address's own, and per client IP one for known and one for
    unknown addresses. The address's own streak locks it (escalating); a locked IP is refused unless the
    password is right for an address with no streak of its own, so nobody sharing an IP (an office, a load
    balancer) can lock a real user out, and a wrong guess from a locked IP never reveals whether the address
    exists (429 either way)."""
    email = _sign_in_address(email)
    ip = context.client_ip.get()
    repository = AuthRepository(session)
    now = utcnow()
    address_key = _throttle_key("email", email)
    # Keyed by "is the address known?".
    ip_keys = {True: _throttle_key("ip-known", ip), False: _throttle_key("ip-unknown", ip)} if ip else {}
    throttles = {t.key: t for t in await repository.throttles([address_key, *ip_keys.values()])}
    address_streak = throttles.get(address_key)
    if address_streak and address_streak.locked_until and address_streak.locked_until > now:
        raise _locked(address_streak.locked_until, now)
    ip_locks = [t.locked_until for key, t in throttles.items()
                if key != address_key and t.locked_until and t.locked_until > now]

    user = await repository.user_by_email(email)
    valid = await config.password_matches(password, user.password_hash if user else None)
    has_streak = address_streak is not None and address_streak.last_failure_at > now - FAILURE_STREAK_WINDOW
    if user is not None and valid:
        if ip_locks and has_streak:
            raise _locked(max(ip_locks), now)  # right, but not from here for now: no failure to count
        await repository.clear_throttle(address_key)
        return await start_session(session, config, user, method="password")
    keys = [address_key] + ([ip_keys[user is not None]] if ip_keys else [])
    await _count_failure(session, config.settings, keys, email=email, user=user, now=now)
    if ip_locks:
        raise _locked(max(ip_locks), now, keep_transaction=True)
    raise InvalidCredentials("Invalid email or password")


def _locked(until: datetime, now: datetime, *, keep_transaction: bool = False) -> TooManyRequests:
    wait = int((until - now).total_seconds()) + 1
    return TooManyRequests("Too many failed sign-ins; try again later", retry_after=wait,
                           keep_transaction=keep_transaction)


_dummy_hashes: dict[int, str] = {}


def _dummy_hash(hasher: PasswordHash) -> str:
    if id(hasher) not in _dummy_hashes:
        _dummy_hashes[id(hasher)] = hasher.hash(uuid.uuid4().hex)
    return _dummy_hashes[id(hasher)]


async def _count_failure(
    session: AsyncSession, settings: Settings, keys: list[str], *, email: str, user: User | None, now: datetime
) -> None:
    repository = AuthRepository(session)
    for key in keys:
        throttle = await repository.count_failure(key, now, now - FAILURE_STREAK_WINDOW)
        delay = _lock_delay(throttle.failures, settings)
        if delay:
            throttle.locked_until = now + timedelta(seconds=delay)
        if key.startswith("email:") and throttle.failures == settings.login_failures_audit_threshold:
            await audit.record(
                session,
                action="auth.login_failures_exceeded",
                target_type="user",
                target_id=user.id if user else None,
                after={"email": email, "failures": throttle.failures},
                actor=context.ANONYMOUS,
            )


# --- magic links --------------------------------------------------------------------------------------------


async def request_magic_link(session: AsyncSession, config: AuthConfig, *, email: str) -> None:
    """Always answers the same way; only an existing user gets an email (no account enumeration), and an
    address gets at most so many such e-mails an hour."""
    email = normalize_email(email)
    user = await AuthRepository(session).user_by_email(email)
    if user is None or not await _room_for(session, config, email):
        return
    token = new_token("jhm_")
    ttl = config.settings.magic_link_ttl_seconds
    await AuthRepository(session).add(
        MagicLink(user_id=user.id, token_hash=token_hash(token), expires_at=utcnow() + timedelta(seconds=ttl))
    )
    await queue_email(
        session,
        to=email,
        template="magic_link",
        values={"link": f"{config.settings.base_url}/auth/magic-link?token={token}", "minutes": str(ttl // 60)},
    )


async def consume_magic_link(session: AsyncSession, config: AuthConfig, *, token: str) -> TokenPair:
    """Sign in. On a verified address that is all it does; on a never-verified one it is the first proof of the
    mailbox, which evicts what an unproven sign-up set up (see prove_mailbox) and says so."""
    repository = AuthRepository(session)
    user_id = await repository.consume_magic_link(token_hash(token), utcnow())
    user = await repository.user_by_id(user_id) if user_id else None
    if user is None:
        raise InvalidToken("This sign-in link is invalid, expired or already used")
    revoked = await prove_mailbox(session, config, user, how="magic_link")
    tokens = await start_session(session, config, user, method="magic_link")
    return tokens.model_copy(update={"revoked": revoked})


async def prove_mailbox(session: AsyncSession, config: AuthConfig, user: User, *, how: str) -> Revoked | None:
    """The mailbox owner has just shown up (a magic link, a provider's verified email, a password reset). If
    the address was never verified, whoever signed up with it may not be the mailbox owner: their password,
    sessions and API keys go, so a squatter cannot keep a way into the real owner's user. A verified address
    changes nothing. Returns what was revoked (also e-mailed to the address), or None."""
    if user.email_verified:
        return None
    repository = AuthRepository(session)
    now = utcnow()
    revoked = Revoked(
        password=user.password_hash is not None,
        sessions=await repository.revoke_all_sessions(user.id, now, "mailbox_owner_signed_in"),
        api_keys=await repository.revoke_all_api_keys(user.id, now),
    )
    user.password_hash = None
    user.email_verified = True
    await audit.record(
        session, action="user.mailbox_proven", target_type="user", target_id=user.id,
        after={"how": how, "password_removed": revoked.password, "sessions_revoked": revoked.sessions,
               "api_keys_revoked": revoked.api_keys},
    )
    if not revoked.anything:
        return None
    await _tell_revoked(session, config, user, revoked, why="Your address was proven for the first time, so "
                        "whatever was set up before it was proven has been removed")
    return revoked


async def _tell_revoked(session: AsyncSession, config: AuthConfig, user: User, revoked: Revoked, *, why: str) -> None:
    await queue_email(session, to=user.email, template="access_revoked",
                      values={"what": f"{why}: {revoked.describe()}.", "base_url": config.settings.base_url})


# --- password reset -----------------------------------------------------------------------------------------


async def request_password_reset(session: AsyncSession, config: AuthConfig, *, email: str) -> None:
    """Same answer for every address; an existing user gets a single-use link (at most so many an hour)."""
    email = normalize_email(email)
    user = await AuthRepository(session).user_by_email(email)
    if user is None or not await _room_for(session, config, email):
        return
    ttl = config.settings.password_reset_ttl_seconds
    token = await _email_token(session, user, EmailTokenPurpose.reset_password, ttl, "jhp_")
    await queue_email(session, to=email, template="password_reset", values={
        "link": f"{config.settings.base_url}/auth/reset-password?token={token}", "minutes": str(ttl // 60),
    })


async def reset_password(session: AsyncSession, config: AuthConfig, *, token: str, password: str) -> TokenPair:
    """Set a new password with a reset link (single use; a refused password leaves the link usable). Every
    session of the user is signed out and the other reset links die; the mailbox is proven by the link, so on
    a never-verified address the squatter's API keys go too. Signs in with the new password."""
    repository = AuthRepository(session)
    now = utcnow()
    user_id = await repository.consume_email_token(token_hash(token), EmailTokenPurpose.reset_password, now)
    user = await repository.user_by_id(user_id) if user_id else None
    if user is None:
        raise InvalidToken("This reset link is invalid, expired or already used")
    _check_password(config, password, email=user.email)  # raises before commit: the link stays unspent
    was_verified = user.email_verified
    revoked = Revoked(
        password=user.password_hash is not None,
        sessions=await repository.revoke_all_sessions(user.id, now, "password_reset"),
        api_keys=0 if was_verified else await repository.revoke_all_api_keys(user.id, now),
    )
    await repository.retire_email_tokens(user.id, EmailTokenPurpose.reset_password, now)
    user.password_hash = await config.hash_password(password)
    user.email_verified = True
    await audit.record(
        session, action="user.password_reset", target_type="user", target_id=user.id,
        actor=context.Actor("user", user.id),
        after={"sessions_revoked": revoked.sessions, "api_keys_revoked": revoked.api_keys,
               "email_verified_now": not was_verified},
    )
    await _tell_revoked(session, config, user, revoked, why="Your password was reset")
    tokens = await start_session(session, config, user, method="password_reset")
    return tokens.model_copy(update={"revoked": revoked})


# --- invites opened from the mailbox ---------------------------------------------------------------------------


async def user_for_invite(session: AsyncSession, *, email: str) -> tuple[User, bool]:
    """An invite's link was opened, so its mailbox is proven: the user with that address, or a new one
    (verified, without a password: they sign in by magic link or choose a password by reset). Returns the user
    and whether it was created. A user who never confirmed their address must do that first: joining a team on
    an unproven sign-up would hand the team to whoever made it."""
    repository = AuthRepository(session)
    user = await repository.user_by_email(email)
    if user is not None:
        if not user.email_verified:
            raise Forbidden(
                "Confirm your e-mail address first (open the link we sent when you signed up, or sign in and ask "
                "for a new one), then open this invite again",
                code="email_unverified",
            )
        return user, False
    user = User(email=email, email_verified=True)
    await repository.add(user)
    await audit.record(session, action="user.created_by_invite", target_type="user", target_id=user.id,
                       after={"email": email}, actor=context.Actor("user", user.id))
    return user, True


# --- OIDC ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OIDCClaims:
    provider: str
    issuer: str
    subject: str
    email: str | None
    email_verified: bool


async def oidc_login(session: AsyncSession, config: AuthConfig, claims: OIDCClaims) -> TokenPair:
    """Sign in by (issuer, subject). A first login links to the user with that verified email, or creates one."""
    repository = AuthRepository(session)
    identity = await repository.oidc_identity(claims.issuer, claims.subject)
    if identity is not None:
        user = await repository.user_by_id(identity.user_id)
        assert user is not None
        return await start_session(session, config, user, method=f"oidc:{claims.provider}")
    if not claims.email or not claims.email_verified:
        raise Conflict(
            "The identity provider did not return a verified email; cannot link or create a user",
            code="oidc_email_unverified",
        )
    email = normalize_email(claims.email)
    user = await repository.user_by_email(email)
    created = user is None
    if user is None:
        user = User(email=email, email_verified=True)
        try:
            await repository.add(user)
        except IntegrityError as error:
            raise Conflict("This identity was linked by a concurrent sign-in; sign in again", code="oidc_link_raced") from error
    context.actor.set(context.Actor("user", user.id))
    revoked = await prove_mailbox(session, config, user, how=f"oidc:{claims.provider}")
    try:
        await repository.add(
            OIDCIdentity(
                user_id=user.id, provider=claims.provider, issuer=claims.issuer, subject=claims.subject, email=email
            )
        )
    except IntegrityError as error:  # the same first sign-in, twice at once: the other one linked it
        raise Conflict("This identity was linked by a concurrent sign-in; sign in again", code="oidc_link_raced") from error
    account_id = None
    if created:
        account = await accounts_service.create_account(
            session, owner=user, name=email.split("@")[0],
            billing_mode=BillingMode(config.settings.new_account_billing_mode),
        )
        account_id = account.id
    await audit.record(
        session,
        action="user.signup_oidc" if created else "user.oidc_linked",
        target_type="user",
        target_id=user.id,
        account_id=account_id,
        after={"provider": claims.provider, "issuer": claims.issuer, "subject": claims.subject},
    )
    tokens = await start_session(session, config, user, method=f"oidc:{claims.provider}")
    return tokens.model_copy(update={"revoked": revoked})


# --- API keys -----------------------------------------------------------------------------------------------


async def create_api_key(session: AsyncSession, *, user: User, data: ApiKeyCreate) -> tuple[ApiKey, str]:
    if data.expires_at is not None and data.expires_at <= utcnow():
        raise BadRequest("expires_at must be in the future", code="invalid_expiry")
    if Scope.admin in data.scopes and not user.is_platform_admin:
        raise Forbidden("Only platform admins can create keys with the admin scope", code="admin_required")
    plaintext = new_token(API_KEY_PREFIX)
    key = ApiKey(
        user_id=user.id,
        name=data.name,
        display_prefix=plaintext[:12],
        token_hash=token_hash(plaintext),
        scopes=sorted({scope.value for scope in data.scopes}),
        expires_at=data.expires_at,
    )
    await AuthRepository(session).add(key)
    await audit.record(
        session,
        action="api_key.created",
        target_type="api_key",
        target_id=key.id,
        after={"name": key.name, "scopes": key.scopes, "expires_at": data.expires_at.isoformat() if data.expires_at else None},
    )
    return key, plaintext


async def revoke_api_key(session: AsyncSession, *, user: User, key_id: uuid.UUID) -> ApiKey:
    key = await AuthRepository(session).api_key_of(user.id, key_id)
    if key is None:
        raise NotFound("API key not found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await audit.record(session, action="api_key.revoked", target_type="api_key", target_id=key.id)
    return key


# --- platform admins ------------------------------------------------------------------------------------------


async def create_platform_admin(session: AsyncSession, config: AuthConfig, *, email: str, password: str) -> str:
    """Create a platform admin, or promote an existing user (keeping their password). Returns what happened."""
    email = normalize_email(email)
    repository = AuthRepository(session)
    user = await repository.user_by_email(email)
    if user is not None:
        if user.is_platform_admin:
            return "already exists"
        user.is_platform_admin = True
        outcome = "granted to existing user"
    else:
        _check_password(config, password, email=email)
        user = User(email=email, password_hash=await config.hash_password(password), is_platform_admin=True,
                    email_verified=True)
        await repository.add(user)
        outcome = "created"
    await audit.record(session, action="admin.granted", target_type="user", target_id=user.id,
                       after={"email": email, "is_platform_admin": True}, actor=context.Actor("system"))
    return outcome
