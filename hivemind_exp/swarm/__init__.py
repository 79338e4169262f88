"""The swarm transport: signed, schema-checked records over a Hivemind DHT.

Map of the package:

- ``transport``           the `SwarmTransport` protocol every node codes against, and its errors
                          (`SwarmStartupError`, `SwarmClosedError`).
- ``hivemind_transport``  `HivemindTransport`: the implementation over hivemind 1.1.12 (chunked
                          small messages, deadlines, dead/stalled DHT process restart).
- ``settings``            `SwarmSettings`: listen/announce addresses, bootnodes, identity, limits.
- ``client_settings``     `SwarmClientSettings`: how a read-only client (swarm reader, dashboard) finds the
                          swarm (flags, bootnode file, chain) and whose round record it trusts.
- ``records``             public models (`OutputRecord`, `RoundState`, `PeerInfo`, `EvalSummary`), the strict wire
                          schemas, chunking with a sha256 manifest, and `DropCounter`.
- ``keys``                DHT key names and ``<tag>[owner:KEY]`` signed subkeys.
- ``read_set``            which peers one per-peer read asks for when the swarm is bigger than
                          ``dht_max_peers_per_read`` (a ring hashed from the round: bounded, spread, unsteerable).
- ``validator``           the record validator running inside the DHT process (imports hivemind;
                          loaded only when a DHT starts).
- ``memory_transport``    `MemorySwarm` / `MemoryTransport`: the same protocol, validation and size rules in one process
                          (unit tests drive whole nodes on it).
- ``identity``            ``swarm.pem``: the node's libp2p key and peer ID.
- ``multiaddrs``          settings parsing shared by every service: multiaddr lists, peer IDs, namespaces.
- ``names``               stable human-readable peer pseudonyms (adjective-adjective-animal).
- ``reader``              what dashboards read: `SwarmSnapshot`, `DhtSwarmReader` (one poll of the DHT as a
                          client) and the snapshot's strict JSON wire form (served by `rl-swarm swarm-reader`).

Typical use::

    settings = load_settings(SwarmSettings, initial_peers=[...])
    transport = HivemindTransport.start(settings)   # SwarmStartupError explains failures
    transport.heartbeat(name="quick-amber-otter")
    transport.publish_outputs(round_num, stage, {qhash: OutputRecord(completion=text)})
    outputs = transport.fetch_outputs(round_num, stage, timeout=10)
    transport.close()

Importing this package is cheap: hivemind (and torch, which it imports) load only when a
transport starts.
"""
