"""Live fixtures (committed data, a real worker): see tests/live.py."""

from tests.live import live  # noqa: F401 - the fixture, for this package
