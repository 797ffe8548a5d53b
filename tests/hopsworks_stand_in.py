"""A Hopsworks stand-in on the admin REST API's wire format (hopsworks-api `UsersAdminResource` and
`ProjectsAdminResource` under `/hopsworks-api/api`), served over real HTTP on loopback so the product's own httpx
client talks to it. It holds users and projects and answers as Hopsworks does:

- an admin API key, `Authorization: ApiKey <prefix>.<secret>`, on every request: 401 otherwise, with the codes of
  `ApiKeyFilter` (200003 no or another kind of header, 320013 unknown prefix, 320012 wrong secret);
- `GET /admin/users` with `filter_by=user_email:<e>` as `UPPER(email) LIKE UPPER(e)%` (a prefix, `_` and `%`
  wildcards), `offset`, `limit`, and the `{"href", "items", "count"}` envelope (no `items` when none match);
- `POST /admin/users` from query parameters: emails lower-cased, 409/160003 for an existing one, `maxNumProjects`
  0 or absent meaning the cluster's default, status TEMP_PASSWORD when none is given, the generated password in
  the answer when none was sent;
- `GET|PUT|DELETE /admin/users/{id}`: status read as its number, written by name; 404/160002 for an unknown id;
  DELETE 400/160054 while the user owns or is a member of a project;
- `GET /admin/projects[?expand=creator]` and `DELETE /admin/projects/{id}` (400/150004 for an unknown id).

Errors are `{"errorCode", "errorMsg", "usrMsg"}`. Hooks for tests: `fail_next` (an outage: the next requests
answer a 5xx), `race_next_create` (another creator makes the same user just before ours), `drift` (an admin
changes a user on the platform behind the product's back) and `before_next` (anything else, just before a
request is answered). Every request is recorded (`seen`)."""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tests.loopback_server import LoopbackServer

API = "/hopsworks-api/api"
KEY_PREFIX = "3f9c2a7b1e6d4c08"  # fixed: test ids are built from it, and every xdist worker must see the same ones
KEY_SECRET = secrets.token_urlsafe(32)
API_KEY = f"{KEY_PREFIX}.{KEY_SECRET}"  # as Hopsworks issues them: <prefix>.<secret>
DEFAULT_MAX_NUM_PROJECTS = 10  # the cluster's default (Settings.getMaxNumProjPerUser)

STATUSES = {"NEW_MOBILE_ACCOUNT": 0, "VERIFIED_ACCOUNT": 1, "ACTIVATED_ACCOUNT": 2, "DEACTIVATED_ACCOUNT": 3,
            "BLOCKED_ACCOUNT": 4, "LOST_MOBILE": 5, "SPAM_ACCOUNT": 6, "TEMP_PASSWORD": 7}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # without the /hopsworks-api/api prefix, e.g. /admin/users/10001
    query: dict[str, str]
    body: Any  # the JSON sent, None when none
    authorization: str | None


@dataclass
class User:
    id: int
    email: str
    firstname: str
    lastname: str
    username: str
    status: str  # the UserAccountStatus name
    max_num_projects: int
    password: str
    account_type: str = "M_ACCOUNT_TYPE"
    remote: tuple[str, str] | None = None  # (type, uuid) of a remote user: how it signs in, and as whom


@dataclass
class Project:
    id: int
    name: str
    owner: int  # a user id
    members: set[int] = field(default_factory=set)  # others in its team


def _error(status: int, code: int, message: str, user_message: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"errorCode": code, "errorMsg": message}
    if user_message is not None:
        body["usrMsg"] = user_message
    return JSONResponse(body, status_code=status)


def _like_prefix(pattern: str) -> re.Pattern[str]:
    """SQL `UPPER(column) LIKE UPPER(pattern) || '%'` as a regular expression."""
    parts = (".*" if char == "%" else "." if char == "_" else re.escape(char) for char in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


@dataclass
class HopsworksStandIn:
    base_url: str = "http://127.0.0.1"
    edition: str = "community"  # "enterprise" takes remote (OAuth2) users
    users: dict[int, User] = field(default_factory=dict)
    projects: dict[int, Project] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # statuses of the next answers, one request each
    hooks: list[tuple[str, str, Callable[[HopsworksStandIn], object]]] = field(default_factory=list)
    _user_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10001))
    _project_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(119))

    # What the platform holds, set up by a test.

    def user(self, email: str, status: str = "ACTIVATED_ACCOUNT", max_num_projects: int = 5,
             firstname: str = "Given", lastname: str = "Family") -> User:
        user_id = next(self._user_ids)
        user = User(user_id, email.lower(), firstname, lastname, f"{re.sub('[^a-z]', '', email.lower())[:8]}"
                    f"{user_id % 1000:03d}", status, max_num_projects, secrets.token_urlsafe(12))
        self.users[user_id] = user
        return user

    def project(self, name: str, owner: User, members: tuple[User, ...] = ()) -> Project:
        project = Project(next(self._project_ids), name, owner.id, {member.id for member in members})
        self.projects[project.id] = project
        return project

    def by_email(self, email: str) -> User | None:
        return next((user for user in self.users.values() if user.email == email.lower()), None)

    # Hooks.

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """The next `count` requests answer `status` (a gateway in front of Hopsworks, or Hopsworks itself)."""
        self.failures.extend([status] * count)

    def before_next(self, method: str, path_start: str, action: Callable[[HopsworksStandIn], object]) -> None:
        """`action` runs once, just before the next request of this method to a path starting so is answered."""
        self.hooks.append((method, path_start, action))

    def race_next_create(self, email: str, status: str = "DEACTIVATED_ACCOUNT", max_num_projects: int = 7) -> None:
        """Another creator makes this user (with its own status and limit) just before our create lands."""
        self.before_next("POST", "/admin/users", lambda stand_in: stand_in.user(
            email, status=status, max_num_projects=max_num_projects, firstname="Raced", lastname="Creator"))

    def drift(self, user: User, *, status: str | None = None, max_num_projects: int | None = None) -> None:
        """An admin changes the user on the platform, not through this API's client."""
        if status is not None:
            user.status = status
        if max_num_projects is not None:
            user.max_num_projects = max_num_projects

    # Reading what was asked.

    def requests(self, method: str | None = None, path_start: str = "") -> list[Seen]:
        return [seen for seen in self.seen
                if (method is None or seen.method == method) and seen.path.startswith(path_start)]

    def calls(self) -> list[tuple[str, str]]:
        return [(seen.method, seen.path) for seen in self.seen]

    # Answering.

    def answer(self, method: str, path: str, query: dict[str, str], raw: bytes,
               authorization: str | None) -> Response:
        if not path.startswith(API + "/"):
            return _error(404, 120000, "HTTP 404 Not Found")
        path = path.removeprefix(API)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.seen.append(Seen(method, path, query, body, authorization))
        for hook in list(self.hooks):
            if hook[0] == method and path.startswith(hook[1]):
                self.hooks.remove(hook)
                hook[2](self)  # may change what is held, or call fail_next to fail this very request
                break
        if self.failures:
            status = self.failures.pop(0)
            return PlainTextResponse("upstream unavailable", status_code=status)
        refused = self._authenticate(authorization)
        if refused is not None:
            return refused
        parts = path.strip("/").split("/")
        if parts[:2] == ["admin", "users"] and len(parts) == 2:
            if method == "GET":
                return self._list_users(query)
            if method == "POST":
                return self._create_user(query)
        if parts[:2] == ["admin", "users"] and len(parts) == 3 and parts[2].isdigit():
            user = self.users.get(int(parts[2]))
            if method in ("GET", "PUT", "DELETE") and user is None:
                return _error(404, 160002, "User not found")
            assert user is not None
            if method == "GET":
                return JSONResponse(self._profile(user, href=True))
            if method == "PUT":
                return self._update_user(user, body)
            if method == "DELETE":
                return self._delete_user(user)
        if parts == ["admin", "projects"] and method == "GET":
            return self._list_projects(query)
        if parts[:2] == ["admin", "projects"] and len(parts) == 3 and parts[2].isdigit() and method == "DELETE":
            project_id = int(parts[2])
            if project_id not in self.projects:
                return _error(400, 150004, "Project wasn't found.", f"projectId: {project_id}")
            del self.projects[project_id]
            return Response(status_code=200)
        return _error(404, 120000, "HTTP 404 Not Found")

    def _authenticate(self, authorization: str | None) -> Response | None:
        if authorization is None:
            return _error(401, 200003, "Authorization header not set.")
        if not authorization.startswith("ApiKey "):
            return _error(401, 200003, "Invalidated Api key.")
        prefix, _, secret = authorization.removeprefix("ApiKey ").strip().partition(".")
        if not secret:
            return _error(401, 320012, "Invalid or incorrect API key.")
        if prefix != KEY_PREFIX:
            return _error(401, 320013, "API key not found in the database")
        if secret != KEY_SECRET:
            return _error(401, 320012, "Invalid or incorrect API key.")
        return None

    def _profile(self, user: User, *, href: bool) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "id": user.id, "firstname": user.firstname, "lastname": user.lastname, "email": user.email,
            "username": user.username, "accountType": user.account_type, "twoFactor": False, "toursState": 0,
            "status": STATUSES[user.status], "maxNumProjects": user.max_num_projects,
            "numActiveProjects": sum(1 for project in self.projects.values() if project.owner == user.id),
            "activated": "2026-01-05T09:30:00.000Z",
            "role": [{"groupName": "HOPS_USER", "groupDesc": "Registered users in the system", "gid": 1006}],
        }
        if href:
            profile = {"href": f"{self.base_url}{API}/users/{user.id}", **profile}
        return profile

    def _list_users(self, query: dict[str, str]) -> Response:
        users = sorted(self.users.values(), key=lambda user: user.id)
        filter_by = query.get("filter_by")
        if filter_by:
            name, _, value = filter_by.partition(":")
            if name.lower() != "user_email":
                return _error(400, 120004, "Some parameters were not provided or were not in the required format.",
                              f"the stand-in filters by user_email only, not {name}")
            pattern = _like_prefix(value)
            users = [user for user in users if pattern.match(user.email)]
        offset = int(query.get("offset") or 0)
        limit = int(query["limit"]) if query.get("limit") else None
        page = users[offset:] if limit is None else users[offset:offset + limit]
        body: dict[str, Any] = {"href": f"{self.base_url}{API}/admin/users", "count": len(users)}
        if page:
            body["items"] = [self._profile(user, href=True) for user in page]
        return JSONResponse(body)

    def _create_user(self, query: dict[str, str]) -> Response:
        account_type = query.get("accountType")
        if account_type == "REMOTE_ACCOUNT_TYPE":
            return self._create_remote_user(query)
        if account_type != "M_ACCOUNT_TYPE":
            return _error(404, 120000, "HTTP 404 Not Found")  # JAX-RS: an enum value that does not convert
        email = (query.get("email") or "").strip().lower()
        if "@" not in email:
            return _error(400, 160037, "Invalid email format.")
        if not query.get("givenName") or not query.get("surname"):
            return _error(400, 160055, "User name not set.")
        status = query.get("status") or "TEMP_PASSWORD"
        if status not in STATUSES:
            return _error(404, 120000, "HTTP 404 Not Found")  # JAX-RS: a query parameter that does not convert
        if self.by_email(email) is not None:
            return _error(409, 160003, "There is an existing account associated with this email")
        requested_max = int(query.get("maxNumProjects") or 0)
        password = query.get("password")
        user = self.user(email, status=status,
                         max_num_projects=requested_max if requested_max > 0 else DEFAULT_MAX_NUM_PROJECTS,
                         firstname=query["givenName"], lastname=query["surname"])
        body = self._profile(user, href=False)
        if password:
            user.password = password
        else:
            body["password"] = user.password
        return JSONResponse(body, status_code=201, headers={"Location": f"{self.base_url}{API}/admin/users/{user.id}"})

    def _create_remote_user(self, query: dict[str, str]) -> Response:
        """The enterprise edition's remote (OAuth2, LDAP, Kerberos) users: `uuid` is the subject it signs in as,
        `type` the kind; no password and no project limit (the cluster's default, changed by PUT). The community
        edition throws UnsupportedOperationException("Remote auth not supported."), a 500."""
        if self.edition != "enterprise":
            return _error(500, 120000, "A generic error occurred.", "Remote auth not supported.")
        email = (query.get("email") or "").strip().lower()
        subject, kind = query.get("uuid") or "", query.get("type") or ""
        if "@" not in email or not subject or kind not in {"OAUTH2", "LDAP", "KRB"}:
            return _error(400, 120004, "Some parameters were not provided or were not in the required format.")
        if self.by_email(email) is not None:
            return _error(409, 160003, "There is an existing account associated with this email")
        user = self.user(email, status=query.get("status") or "ACTIVATED_ACCOUNT",
                         max_num_projects=DEFAULT_MAX_NUM_PROJECTS, firstname=query.get("givenName") or "",
                         lastname=query.get("surname") or "")
        user.account_type, user.remote, user.password = "REMOTE_ACCOUNT_TYPE", (kind, subject), ""
        return JSONResponse(self._profile(user, href=False), status_code=201,
                            headers={"Location": f"{self.base_url}{API}/admin/users/{user.id}"})

    def _update_user(self, user: User, body: Any) -> Response:
        if not isinstance(body, dict):
            return _error(400, 120004, "Some parameters were not provided or were not in the required format.")
        if body.get("status") is not None:
            if body["status"] not in STATUSES:
                return _error(400, 120004, "Some parameters were not provided or were not in the required format.")
            user.status = body["status"]
        if body.get("maxNumProjects") is not None:
            user.max_num_projects = int(body["maxNumProjects"])
        return JSONResponse(self._profile(user, href=False))

    def _delete_user(self, user: User) -> Response:
        if any(project.owner == user.id for project in self.projects.values()):
            return _error(400, 160054, "Failed to delete account.",
                          "Can not delete a user that owns a project. Delete the project first and try again.")
        if any(user.id in project.members for project in self.projects.values()):
            return _error(400, 160054, "Failed to delete account.", "Can not delete a user that is a member of a "
                          "project. Remove the user from all projects and try again.")
        del self.users[user.id]
        return Response(status_code=204)

    def _list_projects(self, query: dict[str, str]) -> Response:
        expand_creator = query.get("expand") == "creator"
        items = []
        for project in sorted(self.projects.values(), key=lambda project: project.id):
            owner = self.users.get(project.owner)
            creator: dict[str, Any] = {"href": f"{self.base_url}{API}/users/{project.owner}"}
            if expand_creator and owner is not None:
                creator |= {"firstname": owner.firstname, "lastname": owner.lastname, "email": owner.email,
                            "username": owner.username}
            items.append({"href": f"{self.base_url}{API}/admin/projects/{project.id}", "id": project.id,
                          "name": project.name, "creator": creator, "created": "2026-01-06T10:00:00.000Z",
                          "paymentType": "PREPAID", "lastQuotaUpdate": "2026-01-06T10:00:00.000Z"})
        return JSONResponse({"href": f"{self.base_url}{API}/admin/projects", "count": len(items), "items": items})


class HopsworksServer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.stand_in = HopsworksStandIn(self.base_url)

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        answer = self.stand_in.answer(request.method, request.url.path, dict(request.query_params), raw,
                                      request.headers.get("authorization"))
        await answer(scope, receive, send)


@pytest.fixture(scope="session")
def hopsworks_server() -> Iterator[HopsworksServer]:
    with HopsworksServer() as server:
        yield server


@pytest.fixture
def hopsworks(hopsworks_server: HopsworksServer) -> HopsworksStandIn:
    """What the platform holds for this test (the server is shared; its state is the test's own)."""
    hopsworks_server.stand_in = HopsworksStandIn(hopsworks_server.base_url)
    return hopsworks_server.stand_in
