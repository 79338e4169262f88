"""The dashboard API (port 8080): FastAPI over an in-memory cache of the swarm and the chain.

- ``settings``  ``DashboardSettings`` (env prefix RLSWARM_): port, poll intervals, staleness
  limits, DHT initial peers or the swarm reader's URL, chain RPC/contract, the local trainer, bounds.
- ``sources``   the reader interfaces (``SwarmReader``, ``ChainReader``), their snapshots, and
  the real readers: ``DhtSwarmReader`` (a DHT client in this process, from
  ``hivemind_exp.swarm.reader``), ``HttpSwarmReader`` (``rl-swarm swarm-reader`` over HTTP, so
  this process imports neither hivemind nor torch; Docker Compose runs it this way) and
  ``ContractChainReader`` over ``hivemind_exp.chain``.
- ``state``     ``DashboardState``: merges snapshots, keeps bounded history, precomputes JSON.
- ``poller``    ``Poller``: background polling tasks (worker threads, timeouts, retries).
- ``models``    pydantic response models (the OpenAPI schema).
- ``server``    ``create_app(settings)`` and the lazily built module attribute ``app``.

Run it with ``rl-swarm dashboard`` or ``cd web && uvicorn api.server:app --reload --port 8080``.
"""
