"""The dashboard API (port 8080): FastAPI over an in-memory cache of the swarm and the chain.

- ``settings``  ``DashboardSettings`` (env prefix RLSWARM_): port, poll intervals, staleness
  limits, DHT initial peers, chain RPC/contract, the local trainer, bounds.
- ``sources``   the reader interfaces (``SwarmReader``, ``ChainReader``), their snapshots, and
  the real readers over ``hivemind_exp.swarm`` (DHT client) and ``hivemind_exp.chain``.
- ``state``     ``DashboardState``: merges snapshots, keeps bounded history, precomputes JSON.
- ``poller``    ``Poller``: background polling tasks (worker threads, timeouts, retries).
- ``models``    pydantic response models (the OpenAPI schema).
- ``server``    ``create_app(settings)`` and the lazily built module attribute ``app``.

Run it with ``rl-swarm dashboard`` or ``cd web && uvicorn api.server:app --reload --port 8080``.
"""
