"""The long-running processes of a swarm, and the supervisor that starts them locally.

- ``settings``     typed settings of the launcher, the trainer node and the coordinator.
- ``node``         ``TrainerNode``: the trainer's round loop (read stage, play it, train, publish,
                   submit on chain); collaborators (transport, chain, engine, events, clock)
                   are passed in, so ``tests/unit/test_node_rules.py`` drives it in memory.
- ``node_state``   the node's durable round state (what it finished and published).
- ``coordinator``  ``Coordinator``: the bootstrap peer and stage clock (DHT round state, chain stage).
- ``swarm_reader`` ``rl-swarm swarm-reader``: one DHT client serving read-only swarm snapshots
                   over HTTP (GET /api/snapshot), so the dashboard needs neither hivemind nor torch.
- ``launcher``     ``rl-swarm up``: each service its own process and log, dependency waits,
                   clean stop of everything when one fails or on Ctrl-C.
- ``doctor``       environment checks behind ``rl-swarm doctor``, each with its fix.

The login service (``modal-login/``) and the dashboard (``web/``) are services too; they live
in their own top-level folders and are started by ``rl-swarm login-server`` / ``rl-swarm dashboard``.
"""
