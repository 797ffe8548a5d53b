"""The Hopsworks admin client through real HTTP against the stateful stand-in: each test checks what the platform
holds afterwards and the requests that reached it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from jushostit.platforms.hopsworks import HopsworksClient, HopsworksUser, PlatformError, Project
from tests.hopsworks_stand_in import (
    API_KEY,
    DEFAULT_MAX_NUM_PROJECTS,
    KEY_PREFIX,
    HopsworksServer,
    HopsworksStandIn,
    hopsworks,
    hopsworks_server,
)

__all__ = ["hopsworks", "hopsworks_server"]  # fixtures


@pytest.fixture
async def http(hopsworks_server: HopsworksServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hopsworks_server.base_url, timeout=5) as client:
        yield client


@pytest.fixture
def client(http: httpx.AsyncClient, hopsworks: HopsworksStandIn) -> HopsworksClient:
    return HopsworksClient(http, API_KEY, backoff_seconds=0.001)


async def test_ensure_creates_once_and_a_second_call_changes_nothing(
    client: HopsworksClient, hopsworks: HopsworksStandIn
) -> None:
    first = await client.ensure_user("Ann@X.com", "Ann", "Lee", max_projects=5, active=True, password="Pa55-word")

    held = hopsworks.by_email("ann@x.com")
    assert held is not None
    assert (held.status, held.max_num_projects, held.firstname, held.lastname, held.password) == (
        "ACTIVATED_ACCOUNT", 5, "Ann", "Lee", "Pa55-word")
    assert first == HopsworksUser(id=held.id, email="ann@x.com", status="ACTIVATED_ACCOUNT", max_projects=5,
                                  first_name="Ann", last_name="Lee", username=held.username, active_projects=0)
    assert first.active and first.initial_password == "Pa55-word"  # the one sent, to hand over once
    assert hopsworks.calls() == [("GET", "/admin/users"), ("POST", "/admin/users")]
    lookup, create = hopsworks.seen
    assert lookup.query == {"filter_by": "user_email:ann@x.com", "offset": "0", "limit": "100"}
    assert create.query == {"accountType": "M_ACCOUNT_TYPE", "email": "Ann@X.com", "givenName": "Ann",
                            "surname": "Lee", "status": "ACTIVATED_ACCOUNT", "maxNumProjects": "5",
                            "password": "Pa55-word"}
    assert {seen.authorization for seen in hopsworks.seen} == {f"ApiKey {API_KEY}"}

    hopsworks.seen.clear()
    again = await client.ensure_user("ann@x.com", "Ann", "Lee", max_projects=5, active=True, password="Pa55-word")

    assert again == first
    assert hopsworks.calls() == [("GET", "/admin/users")]
    assert len(hopsworks.users) == 1


async def test_lookup_matches_the_exact_email_not_the_prefix_filter(
    client: HopsworksClient, hopsworks: HopsworksStandIn
) -> None:
    longer = hopsworks.user("ann@x.com.au")
    hopsworks.user("ann@x.community")

    assert await client.find_user("ann@x.com") is None  # the filter brought two others
    assert hopsworks.seen[-1].query["filter_by"] == "user_email:ann@x.com"

    created = await client.ensure_user("ann@x.com", "Ann", "Short", max_projects=5, active=True, password=None)

    assert created.id != longer.id and created.email == "ann@x.com"
    found = await client.find_user("ANN@x.com")
    assert found is not None and found.id == created.id
    found_longer = await client.find_user("ann@x.com.au")
    assert found_longer is not None and found_longer.id == longer.id
    # `_` is a LIKE wildcard on the platform: the filter matches ann@x.com, the client does not.
    assert await client.find_user("a_n@x.com") is None
    assert [seen.query["filter_by"] for seen in hopsworks.requests("GET", "/admin/users")][-1] == "user_email:a_n@x.com"
    assert len(hopsworks.users) == 3


async def test_lookup_reads_every_page(http: httpx.AsyncClient, hopsworks: HopsworksStandIn) -> None:
    for n in range(5):
        hopsworks.user(f"ann@x.com.{n}")
    wanted = hopsworks.user("ann@x.com")  # the sixth match, on the third page of two
    client = HopsworksClient(http, API_KEY, page_size=2)

    found = await client.find_user("ann@x.com")

    assert found is not None and found.id == wanted.id
    assert [(seen.query["offset"], seen.query["limit"]) for seen in hopsworks.seen] == [
        ("0", "2"), ("2", "2"), ("4", "2")]
    assert await client.find_user("nobody@x.com") is None
    assert hopsworks.seen[-1].query == {"filter_by": "user_email:nobody@x.com", "offset": "0", "limit": "2"}


async def test_a_create_that_loses_a_race_finds_the_winner_and_converges_it(
    client: HopsworksClient, hopsworks: HopsworksStandIn
) -> None:
    hopsworks.race_next_create("bob@x.com", status="DEACTIVATED_ACCOUNT", max_num_projects=7)

    user = await client.ensure_user("bob@x.com", "Bob", "Ray", max_projects=5, active=True, password=None)

    [held] = hopsworks.users.values()
    assert (user.id, user.status, user.max_projects) == (held.id, "ACTIVATED_ACCOUNT", 5)
    assert (held.status, held.max_num_projects, held.firstname) == ("ACTIVATED_ACCOUNT", 5, "Raced")
    assert hopsworks.calls() == [("GET", "/admin/users"), ("POST", "/admin/users"), ("GET", "/admin/users"),
                                 ("PUT", f"/admin/users/{held.id}")]
    assert hopsworks.seen[-1].body == {"status": "ACTIVATED_ACCOUNT", "maxNumProjects": 5}


async def test_a_create_whose_answer_is_lost_is_retried_and_found(
    client: HopsworksClient, hopsworks: HopsworksStandIn
) -> None:
    def lands_then_fails(stand_in: HopsworksStandIn) -> None:
        stand_in.user("cy@x.com", status="ACTIVATED_ACCOUNT", max_num_projects=5, firstname="Cy")
        stand_in.fail_next(1, 502)

    hopsworks.before_next("POST", "/admin/users", lands_then_fails)

    user = await client.ensure_user("cy@x.com", "Cy", "Ng", max_projects=5, active=True, password="Pa55-word")

    [held] = hopsworks.users.values()
    assert (user.id, user.email, user.max_projects, user.active) == (held.id, "cy@x.com", 5, True)
    assert hopsworks.calls() == [("GET", "/admin/users"), ("POST", "/admin/users"), ("POST", "/admin/users"),
                                 ("GET", "/admin/users")]


async def test_a_limit_of_zero_is_set_by_put_after_the_create(
    client: HopsworksClient, hopsworks: HopsworksStandIn
) -> None:
    user = await client.ensure_user("dee@x.com", "Dee", "Ode", max_projects=0, active=True, password=None)

    held = hopsworks.by_email("dee@x.com")
    assert held is not None
    assert (held.max_num_projects, held.status) == (0, "ACTIVATED_ACCOUNT")
    assert (user.max_projects, user.status) == (0, "ACTIVATED_ACCOUNT")
    assert user.initial_password == held.password  # Hopsworks generated it; only the create's answer holds it
    assert hopsworks.calls() == [("GET", "/admin/users"), ("POST", "/admin/users"), ("PUT", f"/admin/users/{held.id}")]
    create, update = hopsworks.seen[1:]
    assert "maxNumProjects" not in create.query and "password" not in create.query
    assert update.body == {"maxNumProjects": 0}
    assert DEFAULT_MAX_NUM_PROJECTS != 0


async def test_deactivate_and_activate_write_only_what_differs(
    client: HopsworksClient, hopsworks: HopsworksStandIn
) -> None:
    held = hopsworks.user("eve@x.com", status="ACTIVATED_ACCOUNT", max_num_projects=5)
    path = f"/admin/users/{held.id}"

    off = await client.set_state(held.id, active=False, max_projects=5)
    assert (off.status, off.active, held.status, held.max_num_projects) == (
        "DEACTIVATED_ACCOUNT", False, "DEACTIVATED_ACCOUNT", 5)
    assert hopsworks.calls() == [("GET", path), ("PUT", path)]
    assert hopsworks.seen[-1].body == {"status": "DEACTIVATED_ACCOUNT"}

    hopsworks.seen.clear()
    same = await client.set_state(held.id, active=False, max_projects=5)
    assert same == off
    assert hopsworks.calls() == [("GET", path)]

    hopsworks.seen.clear()
    on = await client.set_state(held.id, active=True, max_projects=5)
    assert (on.status, held.status) == ("ACTIVATED_ACCOUNT", "ACTIVATED_ACCOUNT")
    assert hopsworks.seen[-1].body == {"status": "ACTIVATED_ACCOUNT"}

    hopsworks.seen.clear()
    member = await client.set_state(held.id, active=True, max_projects=0)
    assert (member.max_projects, held.max_num_projects, held.status) == (0, 0, "ACTIVATED_ACCOUNT")
    assert hopsworks.calls() == [("GET", path), ("PUT", path)]
    assert hopsworks.seen[-1].body == {"maxNumProjects": 0}


async def test_a_status_changed_on_the_platform_is_healed(
    client: HopsworksClient, hopsworks: HopsworksStandIn
) -> None:
    user = await client.ensure_user("fay@x.com", "Fay", "Ito", max_projects=5, active=True, password="Pa55-word")
    held = hopsworks.users[user.id]
    hopsworks.drift(held, status="BLOCKED_ACCOUNT")
    hopsworks.seen.clear()

    healed = await client.set_state(user.id, active=True, max_projects=5)

    assert (healed.status, held.status) == ("ACTIVATED_ACCOUNT", "ACTIVATED_ACCOUNT")
    assert hopsworks.calls() == [("GET", f"/admin/users/{user.id}"), ("PUT", f"/admin/users/{user.id}")]
    assert hopsworks.seen[-1].body == {"status": "ACTIVATED_ACCOUNT"}

    hopsworks.drift(held, status="ACTIVATED_ACCOUNT", max_num_projects=50)  # an admin raised the limit
    hopsworks.seen.clear()
    again = await client.ensure_user("fay@x.com", "Fay", "Ito", max_projects=5, active=True, password="Pa55-word")
    assert (again.max_projects, held.max_num_projects) == (5, 5)
    assert hopsworks.seen[-1].body == {"maxNumProjects": 5}


async def test_delete_removes_the_users_projects_then_the_user(
    client: HopsworksClient, hopsworks: HopsworksStandIn
) -> None:
    owner = hopsworks.user("gus@x.com")
    other = hopsworks.user("gus@x.com.au")
    first, second = hopsworks.project("gus_one", owner), hopsworks.project("gus_two", owner)
    kept = hopsworks.project("theirs", other)
    user = await client.find_user("gus@x.com")
    assert user is not None

    assert await client.projects_of(user) == [Project(first.id, "gus_one", "gus@x.com"),
                                              Project(second.id, "gus_two", "gus@x.com")]
    hopsworks.seen.clear()
    await client.delete_user(user)

    assert set(hopsworks.users) == {other.id}
    assert set(hopsworks.projects) == {kept.id}
    assert hopsworks.calls() == [("GET", "/admin/projects"), ("DELETE", f"/admin/projects/{first.id}"),
                                 ("DELETE", f"/admin/projects/{second.id}"), ("DELETE", f"/admin/users/{owner.id}")]
    assert hopsworks.seen[0].query == {"expand": "creator"}

    hopsworks.seen.clear()
    await client.delete_user(user)  # already gone: done
    assert hopsworks.calls() == [("GET", "/admin/projects"), ("DELETE", f"/admin/users/{owner.id}")]


async def test_a_project_already_removed_counts_as_removed(
    client: HopsworksClient, hopsworks: HopsworksStandIn
) -> None:
    owner = hopsworks.user("hal@x.com")
    project = hopsworks.project("hal_one", owner)
    user = await client.find_user("hal@x.com")
    assert user is not None
    hopsworks.before_next("DELETE", "/admin/projects/", lambda stand_in: stand_in.projects.clear())

    await client.delete_user(user)

    assert hopsworks.users == {} and hopsworks.projects == {}
    assert hopsworks.calls()[-2:] == [("DELETE", f"/admin/projects/{project.id}"), ("DELETE", f"/admin/users/{owner.id}")]


@pytest.mark.parametrize("why", ["member of another's project", "project created meanwhile"])
async def test_a_user_still_in_a_project_is_refused_with_160054(
    client: HopsworksClient, hopsworks: HopsworksStandIn, why: str
) -> None:
    owner = hopsworks.user("ivy@x.com")
    own = hopsworks.project("ivy_own", owner)
    if why == "member of another's project":
        hopsworks.project("team", hopsworks.user("boss@x.com"), members=(owner,))
    else:
        def late_project(stand_in: HopsworksStandIn) -> None:
            stand_in.project("late", owner)

        hopsworks.before_next("DELETE", "/admin/users/", late_project)
    user = await client.find_user("ivy@x.com")
    assert user is not None

    with pytest.raises(PlatformError) as raised:
        await client.delete_user(user)

    assert (raised.value.status, raised.value.code) == (400, 160054)
    assert "160054" in str(raised.value) and "after its projects were removed" in raised.value.message
    assert raised.value.user_message is not None and raised.value.user_message.startswith("Can not delete a user")
    assert owner.id in hopsworks.users and own.id not in hopsworks.projects
    assert hopsworks.calls()[-2:] == [("DELETE", f"/admin/projects/{own.id}"), ("DELETE", f"/admin/users/{owner.id}")]
    assert len(hopsworks.requests("DELETE", "/admin/users/")) == 1  # a refusal is not retried


async def test_a_5xx_is_retried_then_succeeds(client: HopsworksClient, hopsworks: HopsworksStandIn) -> None:
    hopsworks.fail_next(2, 503)

    user = await client.ensure_user("jo@x.com", "Jo", "Park", max_projects=5, active=False, password="Pa55-word")

    held = hopsworks.by_email("jo@x.com")
    assert held is not None and (user.id, user.status, held.status) == (held.id, "DEACTIVATED_ACCOUNT",
                                                                          "DEACTIVATED_ACCOUNT")
    assert hopsworks.calls() == [("GET", "/admin/users")] * 3 + [("POST", "/admin/users")]


async def test_retries_are_bounded(http: httpx.AsyncClient, hopsworks: HopsworksStandIn) -> None:
    hopsworks.fail_next(10, 502)
    client = HopsworksClient(http, API_KEY, attempts=3, backoff_seconds=0.001)

    with pytest.raises(PlatformError) as raised:
        await client.find_user("kim@x.com")

    assert (raised.value.status, raised.value.code) == (502, None)
    assert hopsworks.calls() == [("GET", "/admin/users")] * 3
    assert len(hopsworks.failures) == 7


class _CountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return await super().handle_async_request(request)


async def test_a_transport_failure_is_retried_then_reported() -> None:
    transport = _CountingTransport()
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=1, transport=transport) as http:
        client = HopsworksClient(http, API_KEY, attempts=3, backoff_seconds=0.001)  # nothing listens on 9
        with pytest.raises(PlatformError) as raised:
            await client.find_user("lu@x.com")
    assert (raised.value.status, raised.value.code) == (None, None)
    assert raised.value.message == "could not be reached: ConnectError"
    assert transport.sent == 3


async def test_a_4xx_is_not_retried(client: HopsworksClient, hopsworks: HopsworksStandIn) -> None:
    with pytest.raises(PlatformError) as raised:
        await client.set_state(424242, active=True, max_projects=5)

    assert (raised.value.status, raised.value.code, raised.value.message) == (404, 160002, "User not found")
    assert hopsworks.calls() == [("GET", "/admin/users/424242")]

    hopsworks.seen.clear()
    with pytest.raises(PlatformError) as invalid:
        await client.ensure_user("not-an-email", "No", "Body", max_projects=5, active=True, password=None)
    assert (invalid.value.status, invalid.value.code) == (400, 160037)
    assert hopsworks.calls() == [("GET", "/admin/users"), ("POST", "/admin/users")]
    assert hopsworks.users == {}


@pytest.mark.parametrize(("key", "code"), [
    (f"{KEY_PREFIX}.wrong-secret", 320012),
    ("unknownprefix.secret", 320013),
    ("no-separator", 320012),
])
async def test_a_bad_api_key_is_refused_401(
    http: httpx.AsyncClient, hopsworks: HopsworksStandIn, key: str, code: int
) -> None:
    client = HopsworksClient(http, key, backoff_seconds=0.001)

    with pytest.raises(PlatformError) as raised:
        await client.ensure_user("max@x.com", "Max", "Roe", max_projects=5, active=True, password=None)

    assert (raised.value.status, raised.value.code) == (401, code)
    assert hopsworks.calls() == [("GET", "/admin/users")]
    assert hopsworks.seen[0].authorization == f"ApiKey {key}"
    assert hopsworks.users == {}


@pytest.mark.parametrize("key", ["", "  "])
async def test_a_missing_api_key_is_refused_401(
    http: httpx.AsyncClient, hopsworks: HopsworksStandIn, key: str
) -> None:
    client = HopsworksClient(http, key, backoff_seconds=0.001)

    with pytest.raises(PlatformError) as raised:
        await client.find_user("max@x.com")

    assert (raised.value.status, raised.value.code, raised.value.message) == (
        401, 200003, "Authorization header not set.")
    assert hopsworks.calls() == [("GET", "/admin/users")]
    assert hopsworks.seen[0].authorization is None


async def test_a_request_this_side_cannot_send_is_not_retried(hopsworks: HopsworksStandIn) -> None:
    transport = _CountingTransport()
    async with httpx.AsyncClient(base_url="ftp://127.0.0.1:9", transport=transport) as http:
        client = HopsworksClient(http, API_KEY, backoff_seconds=0.001)
        with pytest.raises(PlatformError) as raised:
            await client.find_user("ned@x.com")
    assert (raised.value.status, raised.value.message) == (None, "could not be asked: UnsupportedProtocol")
    assert transport.sent == 1 and hopsworks.seen == []
