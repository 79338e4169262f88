"""RL Swarm node: GRPO training of a small LLM, with experience shared over a Hivemind DHT.

Map of the package (each module's own docstring says more):

- ``cli``            the ``rl-swarm`` command and its subcommands (heavy imports deferred).
- ``settings_base``  typed-settings machinery: env/.env/flags, readable validation errors.
- ``settings``       the settings objects of the trainer, coordinator, launcher.
- ``multiaddrs``     parsing shared by every service's settings: multiaddr lists, peer IDs, namespaces.
- ``paths``          repository, cache and node-data locations.
- ``model_source``   ``embedded`` SmolLM2 (GGUF -> safetensors once), local dirs, hub ids.
- ``profiles``       device profiles (``configs/<cpu|mac|gpu>/*.yaml``) and hardware detection.
- ``data``           dataset sources: GSM8K hub, local JSONL, built-in problem generator.
- ``identity``       ``swarm.pem``: the node's libp2p key and peer ID.
- ``game``           prompts, parser, reward rubrics and winner picking for the 3-stage round.
- ``swarm``          the swarm transport: signed, schema-checked records over a Hivemind DHT.
- ``trainer``        the fast GRPO step (batched generation with KV cache + policy update).
- ``node``           the trainer node's round loop; checkpoint and resume.
- ``coordinator``    bootstrap peer and stage manager.
- ``chain``          SwarmCoordinator client (wallet / login-relay back-ends), outbox, deploy.
- ``launcher``       ``rl-swarm up``: starts every local service as its own process.
- ``login_client``   HTTP client of the login service: headless sign-in, API-key wait.
- ``hub``            optional push to the Hugging Face hub (token checked at start).
- ``node_state``     the node's durable round state (what it finished and published).
- ``fileio``         the one atomic file write (temp file, fsync, rename; mode set first).
- ``evaluation``     greedy evaluation of a checkpoint (accuracy, format rate).
- ``names``          stable human-readable peer names (adjective-adjective-animal).
- ``telemetry``      OpenTelemetry metrics (OTLP or a Prometheus endpoint).
- ``doctor``         environment checks with fixes.
"""
