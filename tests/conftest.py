"""Shared pytest set-up. Fixtures live in tests/fixtures/<area>.py and load as plugins."""

pytest_plugins = [
]
