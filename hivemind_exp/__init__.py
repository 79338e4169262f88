"""RL Swarm node: GRPO training of a small LLM, with experience shared over a Hivemind DHT.

Map of the package (each subpackage's docstring maps its own files):

- ``cli``        the ``rl-swarm`` command; ``commands/`` holds one module per subcommand
                 (heavy imports deferred, so ``--help`` is instant).
- ``services``   the processes: trainer ``node`` (+ its durable ``node_state``), ``coordinator``,
                 the local ``launcher`` (``rl-swarm up``), ``doctor``, and their ``settings``.
- ``game``       the three-stage GSM8K game: prompts, parser, rewards, winners, ``Stage``;
                 dataset sources (``data``) and greedy ``evaluation``.
- ``sapo``       the SAPO game over ReasoningGym tasks: task mix, rubric, rollout selection.
- ``trainer``    the GRPO engine (sampling, log-probs, memory planner, checkpoints),
                 ``model_source`` (embedded SmolLM2), device ``profiles``, optional ``hub`` push.
- ``swarm``      the swarm transport: signed, schema-checked records over a Hivemind DHT (and an
                 in-memory one for tests); the node ``identity``, ``multiaddrs`` parsing, peer ``names``.
- ``chain``      the SwarmCoordinator client (wallet / login-relay), outbox, deploy, anvil, and
                 ``login_client`` (the login service's HTTP API).
- ``common``     shared utilities: paths, settings machinery, logging, telemetry, events, fileio.
- ``configs``    shipped device profiles (``configs/<cpu|mac|gpu|sapo>/*.yaml``).

Dependencies point one way: services -> (game, sapo, trainer, swarm, chain) -> common.
"""
