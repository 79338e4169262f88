"""On-chain coordination: the SwarmCoordinator contract's client, durable submissions, local chain.

Map of the package:

- ``settings``  ``ChainSettings`` (how a node reaches the contract: off / wallet / relay) and
  ``LocalChainSettings`` (``rl-swarm chain``: anvil host/port/state, deployer, bootnodes).
- ``errors``    ``ChainRevert`` (custom error name + plain English, ``.already_done``),
  ``ChainUnavailable`` (retry), ``RelayRefused``, ``ChainConfigError``; revert decoding.
- ``artifact``  the committed compiled contract ``contracts/build/SwarmCoordinator.json``.
- ``client``    the ``ChainClient`` protocol, ``ChainReader`` (reads over RPC, shared),
  ``build_client(settings)``, ``ensure_registered`` (never takes another wallet's peer for ours).
- ``proof``     ``PeerKey``: the peer's RSA key signs the registration proof the contract checks.
- ``wallet``    ``WalletChainClient``: signs with a local key (nonce lock, receipts, timeouts,
  same-nonce fee-bump replacement of stuck transactions); also the coordinator's
  ``update_stage_and_round`` and bootnode / role calls.
- ``relay``     ``RelayChainClient``: writes through the login service's HTTP API.
- ``rewards``   the on-chain reward scale (points x 1000, int256) and converters.
- ``outbox``    ``Outbox`` (SQLite queue of rewards / winner votes) and ``OutboxWorker``
  (background sender: idempotent pre-check, receipts, exponential backoff, clean stop).
- ``deploy``    ``deploy_contract``: deploy or reuse the contract, roles, bootnodes,
  deployment JSON.
- ``anvil``     ``AnvilProcess``: start/wait/stop a local anvil; anvil's dev keys.
- ``login_client`` ``LoginClient``: the login service's HTTP API (sign up / in, API key, wallet),
  used by ``rl-swarm login`` and by the trainer while it waits for its key.

Nothing here imports web3 at import time; back-ends import it when built.
"""
