from tests.live import live  # noqa: F401 - the fixture, for this package
