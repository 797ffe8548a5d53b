"""The e2e fixtures (a real `jushostit serve` on its own data dir) for every test in this folder."""

from tests.e2e.test_serve import serve, workdir  # noqa: F401 - fixtures
