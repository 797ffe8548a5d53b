"""Run mutmut (configured in pyproject.toml, [tool.mutmut]) against one embedded PostgreSQL for the whole run.

mutmut runs the selected tests in a fresh pytest session per mutant; without DATABASE_URL each session would
start (initdb) an embedded server of its own, which costs more than most of the tests. This starts one server
under var/mutmut-pg for the run, points DATABASE_URL at it, and hands the command line to mutmut:

    .venv/bin/python tests/mutation.py run --max-children 1 "jushostit.reconcile.service.x_reconcile_account*"

Run one mutant at a time (--max-children 1): every session recreates the same test database, and the
concurrency tests measure overlap in wall time. Reading results needs no database: `.venv/bin/mutmut results`,
`.venv/bin/mutmut show <name>`. See docs/testing.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
# Run as a script: its own directory (tests/) must not shadow anything on the path mutmut sets up.
if sys.path and Path(sys.path[0]).resolve() == ROOT / "tests":
    del sys.path[0]


def main(argv: list[str]) -> int:
    os.chdir(ROOT)  # mutmut reads pyproject.toml and writes mutants/ in the working directory
    if os.environ.get("DATABASE_URL"):
        return _mutmut(argv)
    embedded_pg = _embedded_pg()
    server = embedded_pg.start(ROOT / "var" / "mutmut-pg")
    try:
        os.environ["DATABASE_URL"] = embedded_pg.database_url(server, "postgres")
        return _mutmut(argv)
    finally:
        server.cleanup()


def _embedded_pg() -> ModuleType:
    """jushostit.kit.embedded_pg, loaded from its file without importing the `jushostit` package: this process
    must import the package only after mutmut has put the mutated copy (mutants/src) first on sys.path."""
    path = ROOT / "src" / "jushostit" / "kit" / "embedded_pg.py"
    spec = importlib.util.spec_from_file_location("_mutation_embedded_pg", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mutmut(argv: list[str]) -> int:
    from mutmut.__main__ import cli

    try:
        cli.main(args=argv, prog_name="mutmut", standalone_mode=False)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
