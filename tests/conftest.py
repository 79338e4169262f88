"""Shared pytest set-up. Fixtures live in tests/fixtures/<area>.py and load as plugins."""

pytest_plugins = [
    "tests.fixtures.chain",
    "tests.fixtures.swarm",
    "tests.fixtures.login",
    "tests.fixtures.web",
    "tests.fixtures.tiny_model",
]
