"""Shared utilities every service uses; nothing here knows about the game, the swarm or the chain.

- ``paths``          repository, cache, node-data and shared-data locations (pure functions).
- ``settings_base``  typed-settings machinery: flags > env (RLSWARM_*) > ``.env`` > defaults,
                     validation errors that say which value is wrong and how to fix it.
- ``logging_setup``  ``LOG_LEVEL`` / ``DEBUG=1`` for every service.
- ``telemetry``      OpenTelemetry metrics and traces (OTLP export or a Prometheus endpoint).
- ``events``         structured JSON-lines events (what tests and benchmarks read, never logs).
- ``fileio``         the one atomic small-file write (temp file, fsync, rename; mode set first).
"""
