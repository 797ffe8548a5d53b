"""Run as a subprocess by test_crash_safety: one reconcile of an account, with a fault hook that hangs right
after the instance process is spawned and before it is recorded in run.json — the worst moment to be killed.

Usage: python crash_child.py <account_id> <ready_file>; settings come from the environment (DATABASE_URL,
JUSHOSTIT_DATA_DIR, JUSHOSTIT_SECRET_KEYS, JUSHOSTIT_JWT_SECRET).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

from jushostit.bootstrap import open_container
from jushostit.config import Settings
from jushostit.reconcile.service import reconcile_account
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import DesiredInstance


class SpawnThenHang(LocalDriver):
    def __init__(self, root: Path, ready: Path) -> None:
        super().__init__(root)
        self.ready = ready

    async def _spawn(self, directory: Path, instance: DesiredInstance, port: int,
                     env: tuple[tuple[str, str], ...]) -> asyncio.subprocess.Process:
        child = await super()._spawn(directory, instance, port, env)
        partial = self.ready.with_suffix(".partial")
        partial.write_text(str(child.pid))
        os.replace(partial, self.ready)  # the test sees the file only once it holds the pid
        await asyncio.Event().wait()  # hang here until SIGKILL: run.json is never written
        raise AssertionError("unreachable")


async def main(account_id: str, ready: str) -> None:
    settings = Settings()
    async with open_container(settings, apply_migrations=False) as container:
        driver = SpawnThenHang(settings.data_dir.resolve() / "instances", Path(ready))
        await reconcile_account(container.database, container.settings, container.secret_box, driver,
                                uuid.UUID(account_id))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
