"""The pages the links in our e-mails open: confirm an address, sign in, choose a new password, join a team.

Each link is a GET that only shows a page with one button; the button POSTs the token back, so a mail
scanner that follows links changes nothing. The POST is CSRF-safe: a random value is set in a SameSite=Strict
cookie by the page and must come back in the form (double submit), and a cross-site Origin is refused. The
token travels in the query string of the GET only; request logs carry paths without query strings, and the
pages tell browsers not to send it on as a Referer. Minimal on purpose: the web console will restyle them.
"""

from __future__ import annotations

import enum
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from jushostit import container
from jushostit.accounts import service as accounts_service
from jushostit.auth import service as auth_service
from jushostit.auth.dependencies import public
from jushostit.auth.schemas import TokenPair
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import AppError, BadRequest, Forbidden
from jushostit.kit.html import html_response, templates
from jushostit.kit.schemas import OpaqueToken

router = APIRouter(include_in_schema=False, dependencies=[Depends(public(rate_limit=True))])

CSRF_COOKIE = "jushostit_csrf"
MAX_FORM_BYTES = 4096

_templates = templates("jushostit.pages")
LinkToken = Annotated[OpaqueToken, Query()]


@dataclass(frozen=True)
class Form:
    action: str
    token: str
    csrf: str
    button: str
    password: bool = False
    email: bool = False


def render(
    title: str,
    *lines: str,
    status: int = 200,
    form: Form | None = None,
    values: list[tuple[str, str]] | None = None,
    error: bool = False,
) -> HTMLResponse:
    html = _templates.get_template("page.html").render(
        title=title, lines=lines, form=form, values=values or [], error=error
    )
    response = html_response(html, status=status)
    if form is not None:
        response.set_cookie(CSRF_COOKIE, form.csrf, httponly=True, samesite="strict", path="/",
                            secure=container.current().settings.base_url.startswith("https://"))
    return response


def ask(action: str, token: str, title: str, *lines: str, button: str, password: bool = False) -> HTMLResponse:
    return render(title, *lines, form=Form(action, token, secrets.token_urlsafe(32), button, password))


def refused(error: AppError) -> HTMLResponse:
    status = 400 if error.status_code == 401 else error.status_code  # a dead link is no sign-in challenge
    return render("That did not work", error.message, status=status, error=True)


async def posted_form(request: Request, *, with_token: bool = True) -> dict[str, str]:
    """The form, if it is a same-site POST carrying the page's CSRF value; AppError otherwise."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("This form was sent from another site", code="csrf_failed")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise Forbidden("Send the form from the page", code="csrf_failed")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise BadRequest("The form is too large", code="payload_too_large")
    fields = {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), fields.get("csrf", "").encode()):
        raise Forbidden("This page expired or was opened elsewhere: open the link from the e-mail again",
                        code="csrf_failed")
    token = fields.get("token", "")
    if with_token and (not token or len(token) > 512):
        raise BadRequest("The link is incomplete: open it from the e-mail again", code="invalid_token")
    return fields


def signed_in_values(tokens: TokenPair) -> list[tuple[str, str]]:
    minutes = tokens.expires_in // 60
    return [
        (f"Access token for the API (valid {minutes} minutes; send it as Authorization: Bearer …):",
         tokens.access_token),
        ("Refresh token (exchange it at POST /v1/auth/refresh for a new pair):", tokens.refresh_token),
    ]


def revoked_lines(tokens: TokenPair) -> list[str]:
    if tokens.revoked is None:
        return []
    return [f"For your safety: {tokens.revoked.describe()}. We e-mailed you about it too."]


# --- confirm an address -----------------------------------------------------------------------------------------


@router.get("/auth/verify-email", response_class=HTMLResponse)
async def verify_email_page(token: LinkToken) -> HTMLResponse:
    return ask("/auth/verify-email", token, "Confirm your e-mail address",
               "Confirm that this address is yours to finish signing up.", button="Confirm my address")


@router.post("/auth/verify-email", response_class=HTMLResponse)
async def verify_email(request: Request, session: SessionDep) -> HTMLResponse:
    try:
        fields = await posted_form(request)
        async with session.begin_nested():
            user = await auth_service.verify_email(session, token=fields["token"])
    except AppError as error:
        return refused(error)
    return render("Address confirmed", f"{user.email} is confirmed. You can now choose a plan, create API keys "
                  "and invite your team.")


# --- sign in -------------------------------------------------------------------------------------------------------


@router.get("/auth/magic-link", response_class=HTMLResponse)
async def magic_link_page(token: LinkToken) -> HTMLResponse:
    return ask("/auth/magic-link", token, "Sign in", "This link signs you in once.", button="Sign in")


@router.post("/auth/magic-link", response_class=HTMLResponse)
async def magic_link(request: Request, session: SessionDep) -> HTMLResponse:
    c = container.current()
    try:
        fields = await posted_form(request)
        async with session.begin_nested():
            tokens = await auth_service.consume_magic_link(
                session, auth_service.AuthConfig(c.settings, c.jwt_secret), token=fields["token"]
            )
    except AppError as error:
        return refused(error)
    return render("You are signed in", *revoked_lines(tokens), values=signed_in_values(tokens))


# --- choose a new password --------------------------------------------------------------------------------------


@router.get("/auth/reset-password", response_class=HTMLResponse)
async def reset_password_page(token: LinkToken) -> HTMLResponse:
    return ask("/auth/reset-password", token, "Choose a new password",
               "Every device signed in to your user will be signed out.", button="Set the new password",
               password=True)


@router.post("/auth/reset-password", response_class=HTMLResponse)
async def reset_password(request: Request, session: SessionDep) -> HTMLResponse:
    c = container.current()
    try:
        fields = await posted_form(request)
        async with session.begin_nested():  # a refused password leaves the link usable
            tokens = await auth_service.reset_password(
                session, auth_service.AuthConfig(c.settings, c.jwt_secret), token=fields["token"],
                password=fields.get("password", ""),
            )
    except AppError as error:
        if error.code == "weak_password":
            return render("Choose a stronger password", error.message, status=400, error=True,
                          form=Form("/auth/reset-password", fields["token"], request.cookies[CSRF_COOKIE],
                                    "Set the new password", password=True))
        return refused(error)
    return render("Your password is changed", *revoked_lines(tokens), values=signed_in_values(tokens))


@router.get("/auth/forgot-password", response_class=HTMLResponse)
async def forgot_password_page() -> HTMLResponse:
    return render("Forgot your password?", "We will e-mail you a link to choose a new one.",
                  form=Form("/auth/forgot-password", "", secrets.token_urlsafe(32), "E-mail me a link", email=True))


@router.post("/auth/forgot-password", response_class=HTMLResponse)
async def forgot_password(request: Request, session: SessionDep) -> HTMLResponse:
    c = container.current()
    try:
        fields = await posted_form(request, with_token=False)
        async with session.begin_nested():
            await auth_service.request_password_reset(
                session, auth_service.AuthConfig(c.settings, c.jwt_secret), email=fields.get("email", "")[:254]
            )
    except AppError as error:
        return refused(error)
    # The same answer whether or not the address has a user.
    return render("Check your e-mail", "If a user has this address, a link to choose a new password is on its way; "
                  f"it works once, for {c.settings.password_reset_ttl_seconds // 60} minutes.")


# --- join a team ---------------------------------------------------------------------------------------------------


@router.get("/invites/accept", response_class=HTMLResponse)
async def invite_page(token: LinkToken, session: SessionDep) -> HTMLResponse:
    try:
        async with session.begin_nested():
            invite, account = await accounts_service.open_invite(session, token=token)
    except AppError as error:
        return refused(error)
    return ask("/invites/accept", token, f"Join {account.name}",
               f"You are invited to join {account.name} as {invite.role.value}, as {invite.email}.",
               button=f"Join {account.name}")


@router.post("/invites/accept", response_class=HTMLResponse)
async def accept_invite(request: Request, session: SessionDep) -> HTMLResponse:
    try:
        fields = await posted_form(request)
        async with session.begin_nested():
            invite, account = await accounts_service.open_invite(session, token=fields["token"])
            user, created = await auth_service.user_for_invite(session, email=invite.email)
            await accounts_service.accept_invite(session, user=user, token=fields["token"])
    except AppError as error:
        return refused(error)
    lines = [f"You joined {account.name} as {invite.role.value}."]
    if created:
        lines.append(f"Sign in as {user.email} with a sign-in link (POST /v1/auth/magic-link), or choose a "
                     "password with a reset link (POST /v1/auth/password-reset).")
    return render(f"Welcome to {account.name}", *lines)


# --- back from a hosted checkout ------------------------------------------------------------------------------------


class CheckoutResult(enum.StrEnum):
    paid = "paid"
    cancelled = "cancelled"


@router.get("/billing/checkout", response_class=HTMLResponse)
async def checkout_return_page(subscription: uuid.UUID, result: CheckoutResult) -> HTMLResponse:
    """Where Stripe Checkout sends the customer back. It says what happens next and reads nothing: the browser
    carries no credentials here, and the subscription turns active from Stripe's confirmation, not from this
    visit (anyone can open this address)."""
    if result == CheckoutResult.paid:
        return render("Thank you", "Your payment is being confirmed by Stripe. Your plan becomes active, and your "
                      "services start, as soon as it is (usually within a minute).")
    return render("Checkout cancelled", "Nothing was charged. Your subscription stays pending for 24 hours: open "
                  "the checkout again to pay, or simply let it lapse.")


@router.get("/billing/credits", response_class=HTMLResponse)
async def credits_return_page(purchase: uuid.UUID, result: CheckoutResult) -> HTMLResponse:
    """Where Stripe Checkout sends the customer back from buying credits; the credits come from Stripe's
    confirmation, not from this visit."""
    if result == CheckoutResult.paid:
        return render("Thank you", "Your payment is being confirmed by Stripe. The credits are added to your "
                      "balance as soon as it is (usually within a minute; a bank debit can take a few days).")
    return render("Checkout cancelled", "Nothing was charged and no credits were added.")


@router.get("/billing/portal", response_class=HTMLResponse)
async def portal_return_page() -> HTMLResponse:
    """Where Stripe's customer portal sends the customer back."""
    return render("Billing updated", "Changes made in the billing portal (card, plan, cancellation) reach your "
                  "account as soon as Stripe confirms them, usually within a minute.")
