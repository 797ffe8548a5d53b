"""Hopsworks' admin REST API, for the seats a customer account holds on a shared Hopsworks cluster: one platform
user per paying user, with a project limit, activated while paid, deactivated when payment stops, deleted (its
projects first) when the subscription ends.

The wire format is Hopsworks' own (hopsworks-api `UsersAdminResource`, `ProjectsAdminResource`), under
`/hopsworks-api/api` with an admin's API key (`Authorization: ApiKey <prefix>.<secret>`, scope ADMIN):

- `GET /admin/users?filter_by=user_email:<e>&offset=&limit=`: `{"href", "items": [...], "count"}`. The filter is
  `UPPER(email) LIKE UPPER(e) || '%'`, a prefix match in which `_` and `%` are wildcards, so a lookup compares
  the emails itself. Hopsworks stores emails lower-cased, so the comparison ignores case.
- `POST /admin/users?accountType=M_ACCOUNT_TYPE&email=&givenName=&surname=&password=&maxNumProjects=&status=`
  (query parameters, not a body); 201 with the user, and `password` when Hopsworks generated one. A
  `maxNumProjects` of 0 means "the cluster's default", so a limit of 0 is set afterwards by PUT.
  An existing email answers 409 with errorCode 160003. On the enterprise edition,
  `accountType=REMOTE_ACCOUNT_TYPE&uuid=<subject>&type=OAUTH2&email=&givenName=&surname=&status=` makes a user who
  signs in through the identity provider as that subject (no password, no limit: set afterwards by PUT); the
  community edition refuses it ("Remote auth not supported.").
- `GET|PUT|DELETE /admin/users/{id}`: a user reads its `status` as the enum's number (2 = ACTIVATED_ACCOUNT) but
  is written by name (`{"status": "ACTIVATED_ACCOUNT", "maxNumProjects": 5}`); an unknown id answers 404/160002;
  DELETE answers 204, or 400/160054 while the user owns a project or is a member of one.
- `GET /admin/projects?expand=creator` lists every project of the cluster (no filter, no paging) with its
  creator; `DELETE /admin/projects/{id}` removes one (an unknown id answers 400/150004). The admin API names
  neither a project's members nor the Kubernetes namespace it runs in, so neither is modelled here.

Errors are `{"errorCode", "errorMsg", "usrMsg"}`. A 5xx or a transport failure is retried a few times with a
capped exponential backoff (every call here is safe to repeat: a repeated create meets 409/160003 and is found,
a repeated delete meets its not-found); a 4xx never is. Every failure reaches the caller as `PlatformError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

log = structlog.get_logger(__name__)

API = "/hopsworks-api/api"
USERS = f"{API}/admin/users"
PROJECTS = f"{API}/admin/projects"

ACTIVATED = "ACTIVATED_ACCOUNT"
DEACTIVATED = "DEACTIVATED_ACCOUNT"
# UserAccountStatus (hopsworks-persistence): written by name, read back as its number.
STATUS_NAMES = {
    0: "NEW_MOBILE_ACCOUNT", 1: "VERIFIED_ACCOUNT", 2: ACTIVATED, 3: DEACTIVATED, 4: "BLOCKED_ACCOUNT",
    5: "LOST_MOBILE", 6: "SPAM_ACCOUNT", 7: "TEMP_PASSWORD",
}

# RESTCodes (hopsworks-rest-utils): UserErrorCode is 160000 + n, ProjectErrorCode 150000 + n.
USER_WAS_NOT_FOUND = 160002
USER_EXISTS = 160003
ACCOUNT_DELETION_ERROR = 160054
PROJECT_NOT_FOUND = 150004

# Failures on the way that another attempt may not meet; a request this side got wrong is not among them.
RETRIED_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_SECONDS = 0.5
DEFAULT_MAX_BACKOFF_SECONDS = 5.0
DEFAULT_PAGE_SIZE = 100


class PlatformError(Exception):
    """Hopsworks refused or could not be reached: `status` is the HTTP status (None when no answer came),
    `code` Hopsworks' errorCode, `message` its errorMsg and `user_message` its usrMsg (the specific reason)."""

    def __init__(self, status: int | None, code: int | None, message: str, user_message: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.user_message = user_message
        parts = [f"Hopsworks answered {status}" if status is not None else "Hopsworks did not answer"]
        if code is not None:
            parts.append(f"(errorCode {code})")
        text = " ".join(parts) + f": {message}"
        super().__init__(f"{text} ({user_message})" if user_message and user_message != message else text)


@dataclass(frozen=True)
class HopsworksUser:
    """A platform user as the admin API reads it; `status` is the UserAccountStatus name."""

    id: int
    email: str
    status: str
    max_projects: int
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None
    active_projects: int | None = None
    # Only right after a create: the password to hand to the person once (the one sent, or Hopsworks' own).
    initial_password: str | None = field(default=None, repr=False, compare=False)

    @property
    def active(self) -> bool:
        """Can log in and work: any other status (deactivated, blocked, temporary password…) is not a paid seat."""
        return self.status == ACTIVATED


@dataclass(frozen=True)
class Project:
    """A project on the platform; `owner_email` is its creator's (the only user the admin API names)."""

    id: int
    name: str
    owner_email: str | None = None


class HopsworksClient:
    """The admin API on an `httpx.AsyncClient` whose `base_url` is the platform's URL; the caller owns (and
    closes) that client, so its timeouts, TLS settings and connection pool are the caller's."""

    def __init__(self, http: httpx.AsyncClient, api_key: str, *, attempts: int = DEFAULT_ATTEMPTS,
                 backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
                 max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        if attempts < 1 or page_size < 1:
            raise ValueError("attempts and page_size must be at least 1")
        self._http = http
        self._headers = {"Accept": "application/json"}
        if api_key.strip():  # none configured: no header, and Hopsworks' own 401 says so like a wrong key's would
            self._headers["Authorization"] = f"ApiKey {api_key.strip()}"
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._page_size = page_size
        self.writes = 0  # changes the platform accepted (creates, updates, deletes): none on a pass that converged

    async def find_user(self, email: str) -> HopsworksUser | None:
        """The user with exactly this email (ignoring case, as Hopsworks does), or None. The list filter is a
        prefix match, so `ann@x.com` also brings `ann@x.com.au`: every page is read and compared here."""
        wanted = email.strip().lower()
        offset = 0
        while True:
            body = await self._json("GET", USERS, params={
                "filter_by": f"user_email:{wanted}", "offset": offset, "limit": self._page_size})
            items = body.get("items") or []
            for item in items:
                if isinstance(item, dict) and str(item.get("email", "")).lower() == wanted:
                    return _user(item)
            offset += len(items)
            if not items or offset >= _int(body.get("count"), default=0):
                return None

    async def ensure_user(self, email: str, first_name: str, last_name: str, *, max_projects: int, active: bool,
                          password: str | None, remote_subject: str | None = None) -> HopsworksUser:
        """The user exists with this limit and status, whatever part of it was there before. Safe to repeat: an
        existing user is not created again, and a create that loses a race (409/160003) finds the winner's. With
        `remote_subject`, a new user is a remote OAuth2 user who signs in as that subject (enterprise edition)."""
        _check_limit(max_projects)
        user = await self.find_user(email)
        if user is None:
            try:
                user = await self._create(email, first_name, last_name, max_projects=max_projects, active=active,
                                          password=password, remote_subject=remote_subject)
            except PlatformError as error:
                if error.code != USER_EXISTS:
                    raise
                log.info("hopsworks.create_raced", error_code=error.code)
                user = await self.find_user(email)
                if user is None:
                    raise PlatformError(error.status, error.code, "Hopsworks says a user with this email exists, "
                                        "but no user with exactly this email is listed", error.user_message) from error
        return await self._converge(user, active=active, max_projects=max_projects)

    async def set_state(self, user_id: int, *, active: bool, max_projects: int) -> HopsworksUser:
        """The user's status and limit made what the seat says, reading them first and writing only what differs
        (which also undoes an admin's change on the platform). Active is ACTIVATED_ACCOUNT, inactive is
        DEACTIVATED_ACCOUNT, whatever other status the user was in."""
        _check_limit(max_projects)
        user = _user(await self._json("GET", f"{USERS}/{int(user_id)}"))
        return await self._converge(user, active=active, max_projects=max_projects)

    async def projects_of(self, user: HopsworksUser) -> list[Project]:
        """The projects the user created. The admin API lists every project of the cluster with its creator and
        has no filter; it does not say who else is a member, so projects the user only belongs to are not here."""
        body = await self._json("GET", PROJECTS, params={"expand": "creator"})
        found = []
        for item in body.get("items") or []:
            if not isinstance(item, dict):
                continue
            creator = item.get("creator")
            if not isinstance(creator, dict):
                continue
            created_by_email = str(creator.get("email") or "").lower() == user.email.lower()
            created_by_id = str(creator.get("href") or "").rstrip("/").endswith(f"/users/{user.id}")
            if created_by_email or created_by_id:
                found.append(Project(id=_int(item.get("id")), name=str(item.get("name") or ""),
                                     owner_email=creator.get("email") or None))
        return found

    async def delete_user(self, user: HopsworksUser) -> None:
        """The user's projects removed, then the user (Hopsworks refuses to delete a user who owns or belongs to a
        project). Already gone counts as done, so a repeated call ends quietly."""
        for project in await self.projects_of(user):
            try:
                await self._request("DELETE", f"{PROJECTS}/{project.id}")
            except PlatformError as error:
                # Removed meanwhile (by an earlier attempt or an admin): what was asked is so.
                if error.status != 404 and error.code != PROJECT_NOT_FOUND:
                    raise
        try:
            await self._request("DELETE", f"{USERS}/{user.id}")
        except PlatformError as error:
            if error.status == 404:
                return
            if error.code == ACCOUNT_DELETION_ERROR:
                raise PlatformError(error.status, error.code, (
                    f"Hopsworks refused to delete user {user.id} after its projects were removed (errorCode "
                    f"{ACCOUNT_DELETION_ERROR}): it owns a project created meanwhile, or is a member of another "
                    "user's project, which the admin API does not list"), error.user_message) from error
            raise

    async def _create(self, email: str, first_name: str, last_name: str, *, max_projects: int, active: bool,
                      password: str | None, remote_subject: str | None) -> HopsworksUser:
        params: dict[str, str | int] = {
            "accountType": "M_ACCOUNT_TYPE",  # required: the resource switches on it
            "email": email.strip(), "givenName": first_name, "surname": last_name,
            "status": ACTIVATED if active else DEACTIVATED,
        }
        if remote_subject is not None:
            params.update(accountType="REMOTE_ACCOUNT_TYPE", uuid=remote_subject, type="OAUTH2")
            password = None  # a remote user signs in at the identity provider
        elif max_projects > 0:  # 0 here would mean the cluster's default: set afterwards
            params["maxNumProjects"] = max_projects
        if password:
            params["password"] = password
        body = await self._json("POST", USERS, params=params)
        log.info("hopsworks.user_created", user_id=body.get("id"))
        user = _user(body)
        # The password to hand to the person once: Hopsworks' generated one, or the one sent.
        return user if user.initial_password else dataclasses.replace(user, initial_password=password)

    async def _converge(self, user: HopsworksUser, *, active: bool, max_projects: int) -> HopsworksUser:
        wanted_status = ACTIVATED if active else DEACTIVATED
        changes: dict[str, str | int] = {}
        if user.status != wanted_status:
            changes["status"] = wanted_status
        if user.max_projects != max_projects:
            changes["maxNumProjects"] = max_projects
        if not changes:
            return user
        log.info("hopsworks.user_updated", user_id=user.id, fields=sorted(changes))
        updated = _user(await self._json("PUT", f"{USERS}/{user.id}", json=changes))
        return dataclasses.replace(updated, initial_password=user.initial_password)

    async def _json(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                    json: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self._request(method, path, params=params, json=json)
        try:
            body = response.json()
        except ValueError as error:
            raise PlatformError(response.status_code, None, "the answer is not JSON") from error
        if not isinstance(body, dict):
            raise PlatformError(response.status_code, None, "the answer is not a JSON object")
        return body

    async def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                       json: dict[str, Any] | None = None) -> httpx.Response:
        """One call, repeated on a 5xx or a transport failure (never on a 4xx); a refusal becomes PlatformError.
        Neither the URL (a create carries the password in its query) nor the key is ever logged."""
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._http.request(method, path, params=params, json=json, headers=self._headers)
            except RETRIED_TRANSPORT_ERRORS as error:
                if attempt == self._attempts:
                    raise PlatformError(None, None, f"could not be reached: {type(error).__name__}") from error
                log.warning("hopsworks.retry", method=method, attempt=attempt, error=type(error).__name__)
            except httpx.TransportError as error:  # ours (an illegal header, a bad URL): repeating cannot help
                raise PlatformError(None, None, f"could not be asked: {type(error).__name__}") from error
            else:
                if response.status_code < 400:
                    if method != "GET":
                        self.writes += 1
                    return response
                if response.status_code < 500 or attempt == self._attempts:
                    raise _error(response)
                log.warning("hopsworks.retry", method=method, attempt=attempt, status=response.status_code)
            await asyncio.sleep(min(self._backoff * 2 ** (attempt - 1), self._max_backoff))
        raise AssertionError("unreachable: the last attempt returns or raises")


def _error(response: httpx.Response) -> PlatformError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return PlatformError(response.status_code, None, response.reason_phrase or "error")
    code = body.get("errorCode")
    message = body.get("errorMsg") or response.reason_phrase or "error"
    user_message = body.get("usrMsg")
    return PlatformError(response.status_code, code if isinstance(code, int) else None, str(message),
                         str(user_message) if user_message else None)


def _user(item: dict[str, Any]) -> HopsworksUser:
    status = item.get("status")
    return HopsworksUser(
        id=_int(item.get("id")), email=str(item.get("email") or ""),
        status=STATUS_NAMES.get(status, str(status)) if isinstance(status, int) else str(status),
        max_projects=_int(item.get("maxNumProjects"), default=0),
        first_name=item.get("firstname"), last_name=item.get("lastname"), username=item.get("username"),
        active_projects=item.get("numActiveProjects"), initial_password=item.get("password") or None,
    )


def _int(value: Any, *, default: int | None = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if default is not None:
        return default
    raise PlatformError(None, None, f"the answer lacks a number where one was expected (found {value!r})")


def _check_limit(max_projects: int) -> None:
    if max_projects < 0:
        raise ValueError("max_projects cannot be negative")
