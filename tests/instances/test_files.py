"""Uploading a static site's files: `PUT /v1/instances/{id}/files/{path}` puts the raw body at `path` under the
site's root, which the site serves; paths that would leave the root are refused and write nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jushostit.models import Role
from tests.live import Live, Signup


async def running_site(live: Live) -> tuple[Signup, dict[str, Any]]:
    owner = await live.signup("Files Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "files")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    return owner, site


def put(live: Live, who: Signup, site: dict[str, Any], path: str, content: bytes) -> Any:
    return live.client.put(f"/v1/instances/{site['id']}/files/{path}", content=content,
                           headers={**who.headers, "content-type": "application/octet-stream"})


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


async def test_an_uploaded_index_html_is_served_through_the_router(live: Live) -> None:
    owner, site = await running_site(live)
    page = b"<!doctype html><h1>Uploaded by me</h1>"

    replaced = await put(live, owner, site, "index.html", page)  # the seeded page, replaced
    assert replaced.status_code == 200, replaced.text
    assert replaced.json() == {"path": "index.html", "size": len(page), "created": False}
    created = await put(live, owner, site, "about/team.html", b"<p>the team</p>")
    assert created.status_code == 201 and created.json()["created"] is True

    assert (await live.page(site["slug"])).content == page
    assert (await live.page(site["slug"], "/about/team.html")).text == "<p>the team</p>"
    [entry] = [e for e in await live.audit("instance.file_written", site["id"]) if e.after["path"] == "about/team.html"]
    assert entry.after == {"path": "about/team.html", "size": 15, "created": True}


async def test_file_paths_that_would_leave_the_site_are_refused_and_write_nothing(live: Live) -> None:
    owner, site = await running_site(live)
    root = live.data_dir(site)
    outside = root.parent.parent  # the account's directory: nothing may land there or above
    elsewhere = live.settings.data_dir / "elsewhere"
    elsewhere.mkdir()
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "linked-file.html").symlink_to(elsewhere / "target.html")
    before_outside, before_root = files_under(outside), files_under(root)

    for path in ("%2e%2e/escape.html", "..%2fescape.html", "a/%2e%2e/%2e%2e/%2e%2e/escape.html",
                 "/etc/escape.html", "%2Fescape.html", "nul%00.html", "a//b.html", "%2e/x.html", "back%5cslash.html",
                 "linked/escape.html", "linked-file.html", "x" * 300 + ".html", "/".join(["d"] * 600)):
        refused = await put(live, owner, site, path, b"escaped")
        assert refused.status_code == 422, (path, refused.status_code, refused.text)
        assert refused.json()["error"]["code"] == "invalid_path", refused.text
    assert files_under(outside) == before_outside and files_under(root) == before_root
    assert list(elsewhere.iterdir()) == []
    assert not any(p.name == "escape.html" for p in live.settings.data_dir.rglob("*"))
    assert os.path.islink(root / "linked-file.html")  # left as it was


async def test_an_upload_over_the_body_limit_is_refused(live: Live) -> None:
    owner, site = await running_site(live)
    too_big = b"x" * (live.settings.max_body_bytes + 1)
    refused = await put(live, owner, site, "big.bin", too_big)
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "payload_too_large"
    assert not (live.data_dir(site) / "big.bin").exists()


async def test_only_the_accounts_owners_and_admins_upload_and_only_to_sites_that_serve_files(live: Live) -> None:
    owner, site = await running_site(live)
    member = await live.add_member(owner, Role.member)
    account_admin = await live.add_member(owner, Role.admin)
    stranger = await live.signup("Stranger Co")

    other_tenant = await put(live, stranger, site, "index.html", b"defaced")
    assert other_tenant.status_code == 404 and other_tenant.json()["error"]["code"] == "not_found"
    as_member = await put(live, member, site, "index.html", b"defaced")
    assert as_member.status_code == 403 and as_member.json()["error"]["code"] == "insufficient_role"
    assert b"defaced" not in (live.data_dir(site) / "index.html").read_bytes()
    assert (await put(live, account_admin, site, "admin.html", b"ok")).status_code == 201

    admin = await live.admin()
    blog_owner = await live.paid_starter(admin, "Blog Co")
    blog = await live.placed(blog_owner, "blog", "wordpress")  # a container image: no files of ours to serve
    refused = await put(live, blog_owner, blog, "index.html", b"<p>hi</p>")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "files_not_supported"
