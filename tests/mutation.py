"""Run mutmut (configured in pyproject.toml, [tool.mutmut]) against one embedded PostgreSQL for the whole run.

mutmut runs the selected tests in a fresh pytest session per mutant; without DATABASE_URL each session would
start (initdb) an embedded server of its own, which costs more than most of the tests. This starts one server
under var/mutmut-pg for the run, points DATABASE_URL at it, and hands the command line to mutmut:

    .venv/bin/python tests/mutation.py run --max-children 1 "jushostit.reconcile.service.x_reconcile_account*"

Each mutant's session gets a database of its own (`jushostit_test_mutant<pid>`, dropped after it), so children
never share one. Still run one at a time (--max-children 1) on a small machine: with two children on two busy
cores, tests with timing bounds failed for the wrong reason now and then and counted
survivors as killed. Reading results needs no database: `.venv/bin/mutmut results`, `.venv/bin/mutmut show
<name>`. See docs/testing.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
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


def _database_per_mutant() -> None:
    """tests/conftest.py names its database after PYTEST_XDIST_WORKER: each forked mutant session sets its own."""
    from mutmut.runners.harness import PytestRunner

    run_tests = PytestRunner.run_tests

    def own_database(self: PytestRunner, *, mutant_name: str | None, tests: Iterable[str]) -> int:
        if mutant_name is None:  # the clean run, in mutmut's own process
            return run_tests(self, mutant_name=mutant_name, tests=tests)
        worker = f"mutant{os.getpid()}"
        os.environ["PYTEST_XDIST_WORKER"] = worker
        try:
            return run_tests(self, mutant_name=mutant_name, tests=tests)
        finally:
            _drop_database(f"jushostit_test_{worker}")

    PytestRunner.run_tests = own_database  # type: ignore[method-assign]


def _drop_database(name: str) -> None:
    import psycopg

    url = "postgresql://" + os.environ["DATABASE_URL"].split("://", 1)[1]
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _mutmut(argv: list[str]) -> int:
    from mutmut.__main__ import cli

    _database_per_mutant()

    try:
        cli.main(args=argv, prog_name="mutmut", standalone_mode=False)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
