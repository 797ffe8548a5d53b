"""The first hour, as the README tells it: a fresh data dir, `jushostit serve`, and the README's "Try it" commands
run literally in bash, with the one step a person does in a browser (the confirmation link from serve's log,
opened with a plain GET, its button posted) done the way a browser does it."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_serve import FIRST_START_BUDGET, Serve, mailbox_link, wait_for

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
STEP_BUDGET = 60.0  # seconds for a block of commands, the site's start included
DONE = "__step_done__"


def try_it_blocks() -> list[str]:
    """The shell blocks of the README's "Try it" section, in order."""
    section = README.read_text().split("### Try it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


class Shell:
    """One bash, fed the README's blocks one at a time, so their variables carry over as in a terminal."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(["bash"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        self.transcript = ""

    def run(self, block: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{block}\necho; echo {DONE}\n")
        self.proc.stdin.flush()
        output = []
        deadline = time.monotonic() + STEP_BUDGET
        while (line := self.proc.stdout.readline()) and line.strip() != DONE:
            output.append(line)
            assert time.monotonic() < deadline, "".join(output)
        self.transcript += "".join(output)
        return "".join(output)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def test_a_newcomer_follows_the_readme_from_sign_up_to_a_page_on_their_site(serve: Serve) -> None:
    blocks = try_it_blocks()
    assert len(blocks) == 2, "Try it: a sign-up block, then everything after the confirmation link"
    serve.start(FIRST_START_BUDGET)
    shell = Shell(serve.env, serve.data_dir.parent)
    try:
        signed_up = shell.run(blocks[0])
        assert '"message"' in signed_up and "Check your e-mail" in signed_up, signed_up

        email = re.search(r"EMAIL=(\S+)", blocks[0])
        assert email, blocks[0]
        link = wait_for(lambda: mailbox_link(serve, email.group(1), "/auth/verify-email"), STEP_BUDGET,
                        "the confirmation e-mail in serve's log")
        with httpx.Client(timeout=30) as browser:
            page = browser.get(link)  # a plain GET, as a click in a mail client
            assert page.status_code == 200 and "Confirm my address" in page.text, page.text
            form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
            action = re.search(r'<form method="post" action="([^"]+)">', page.text)
            assert action, page.text
            confirmed = browser.post(f"{serve.base_url}{action.group(1)}", data=form)
            assert confirmed.status_code == 200 and "is confirmed" in confirmed.text, confirmed.text

        hosted = shell.run(blocks[1])
        assert "<h1>Hello from JusHostIt</h1>" in hosted, shell.transcript + serve.logs()
        assert '"error"' not in hosted, shell.transcript
    finally:
        shell.close()
