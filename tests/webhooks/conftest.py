"""The webhook tests run on committed data (a real worker applies the events)."""

from tests.live import live  # noqa: F401 - the fixture, for these tests
