"""OpenID Connect sign-in through authlib, for any provider configured by discovery URL.

authlib checks `state` (kept in the signed session cookie) and the id_token's `nonce`, issuer, audience,
expiry and signature against the provider's JWKS. We then link the identity by (issuer, subject).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

import httpx2  # authlib talks to providers through httpx2 whenever it is installed (lightkube needs it)
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.starlette_client import OAuth
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse
from joserfc.errors import JoseError

from jushostit import container
from jushostit.auth import service
from jushostit.auth.dependencies import public
from jushostit.auth.schemas import TokenPair
from jushostit.config import Settings, resolve_secrets
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import AppError, NotFound, Unauthorized, responses

router = APIRouter(prefix="/v1/auth/oidc", tags=["auth"], dependencies=[Depends(public(rate_limit=True))])


class OIDCFailed(Unauthorized):
    code = "oidc_failed"


class OIDCUnavailable(AppError):
    """The provider could not be reached (discovery, token or JWKS request failed): not the caller's fault."""

    status_code = 502
    code = "oidc_unavailable"


def session_cookie_secret(settings: Settings) -> str:
    _, jwt_secret, _ = resolve_secrets(settings)
    return hmac.new(jwt_secret.encode(), b"oidc-session-cookie", hashlib.sha256).hexdigest()


def build_registry(settings: Settings) -> OAuth:
    oauth = OAuth()
    for name, provider in settings.oidc_providers.items():
        oauth.register(
            name=name,
            server_metadata_url=provider.discovery_url,
            client_id=provider.client_id,
            client_secret=provider.client_secret.get_secret_value(),
            client_kwargs={"scope": provider.scope},
        )
    return oauth


# A configured provider's name (oidc_identities.provider is 64 characters); a longer one names none: 404.
ProviderName = Annotated[str, Path(max_length=64)]


def _client(request: Request, provider: str):  # noqa: ANN202 - authlib's StarletteOAuth2App
    oauth: OAuth = request.app.state.oauth
    client = oauth.create_client(provider) if provider in container.current().settings.oidc_providers else None
    if client is None:
        raise NotFound("Unknown identity provider")
    return client


@router.get(
    "/{provider}/login", status_code=302, response_class=RedirectResponse, responses=responses(404, 429, 502)
)
async def oidc_login(provider: ProviderName, request: Request) -> RedirectResponse:
    """Redirects the browser to the provider's authorization page."""
    client = _client(request, provider)
    redirect_uri = f"{container.current().settings.base_url}/v1/auth/oidc/{provider}/callback"
    try:
        return await client.authorize_redirect(request, redirect_uri)
    except httpx2.HTTPError as error:
        raise OIDCUnavailable(f"Identity provider {provider} is unreachable") from error


@router.get(
    "/{provider}/callback", response_model=TokenPair, responses=responses(400, 401, 404, 409, 429, 502)
)
async def oidc_callback(provider: ProviderName, request: Request, session: SessionDep) -> TokenPair:
    client = _client(request, provider)
    try:
        token = await client.authorize_access_token(request)
    except OAuthError as error:
        raise OIDCFailed(f"Sign-in with {provider} failed: {error.error}") from error
    except JoseError as error:  # the id_token failed validation (nonce, issuer, audience, expiry, signature)
        raise OIDCFailed(f"Sign-in with {provider} failed: {error.error} ({error.description})") from error
    except httpx2.HTTPError as error:
        raise OIDCUnavailable(f"Identity provider {provider} is unreachable") from error
    userinfo = token.get("userinfo")
    if not userinfo or "iss" not in userinfo or "sub" not in userinfo:
        raise OIDCFailed(f"Sign-in with {provider} returned no id_token claims")
    c = container.current()
    return await service.oidc_login(
        session,
        service.AuthConfig(c.settings, c.jwt_secret),
        service.OIDCClaims(
            provider=provider,
            issuer=str(userinfo["iss"]),
            subject=str(userinfo["sub"]),
            email=userinfo["email"] if isinstance(userinfo.get("email"), str) else None,  # no usable email
            email_verified=userinfo.get("email_verified") is True,
        ),
    )
