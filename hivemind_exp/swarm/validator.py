"""Code that runs inside the DHT process: the record validator and ``run_coroutine`` helpers.

Imports hivemind, so it is loaded lazily (when a transport starts).

hivemind calls ``validate`` when a peer asks us to store a record and on every record
another peer returns to our lookups; a record that fails is neither stored nor returned.
It extends hivemind's ``RSASignatureValidator`` (owner marker in the subkey, signature
appended to the value) with what that class leaves open:

- every record must be owner-signed (hivemind lets unmarked records through);
- the raw value is size-capped before anything parses it;
- the value must decode to one of our strict wire schemas (hivemind's ``SchemaValidator``
  keys schemas by fixed key names, but our keys carry round/stage/peer, and the DHT only
  sees their hashes, so the record's kind travels in the value instead);
- the writer named in the value must be the subkey's owner;
- the subkey tag must be the one the record's kind is written under (`records.check_tag`):
  one reward / heartbeat / winners / round-state record per owner and key;
- one owner holds at most `MAX_SUBKEYS_PER_OWNER` distinct subkeys under one key (outputs,
  groups): counted in a bounded table, so a publisher cannot pad a key with records.

Failures are counted by reason; the transport reads the counts with `read_counts`.

`store_batch` stores many records in one call from a file the parent wrote, so the
payload never crosses the parent-to-DHT pipe (see hivemind_transport for why).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections import Counter, OrderedDict

import msgpack
from hivemind.dht.crypto import RSASignatureValidator
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils.crypto import RSAPrivateKey
from hivemind.utils.serializer import MSGPackSerializer

from hivemind_exp.swarm.keys import parse_subkey
from hivemind_exp.swarm.records import MAX_SUBKEYS_PER_OWNER, RecordRejected, check_tag, decode_wire
from hivemind_exp.swarm.settings import PROTOCOL_MAX_RECORD_BYTES, SIGNATURE_OVERHEAD_BYTES

log = logging.getLogger(__name__)


# (key, owner) pairs whose subkeys are counted; the least recently used pair is forgotten first.
MAX_TRACKED_OWNER_KEYS = 4096


class OwnerSubkeyCap:
    """Distinct subkeys per (key, owner), at most `limit` each; memory bounded by `max_tracked` pairs."""

    def __init__(self, limit: int = MAX_SUBKEYS_PER_OWNER, max_tracked: int = MAX_TRACKED_OWNER_KEYS):
        self.limit = limit
        self.max_tracked = max_tracked
        self._seen: OrderedDict[tuple[bytes, str], set[bytes]] = OrderedDict()

    def admit(self, key: bytes, owner: str, subkey: bytes) -> bool:
        pair = (key, owner)
        digest = hashlib.blake2b(subkey, digest_size=8).digest()
        subkeys = self._seen.get(pair)
        if subkeys is None:
            subkeys = self._seen[pair] = set()
            while len(self._seen) > self.max_tracked:
                self._seen.popitem(last=False)
        self._seen.move_to_end(pair)
        if digest in subkeys:
            return True  # a re-store or a lookup of a record already counted
        if len(subkeys) >= self.limit:
            return False
        subkeys.add(digest)
        return True


class SwarmRecordValidator(RSASignatureValidator):
    """Signature + size + schema + owner + tag checks and the per-owner subkey cap, with drop counts."""

    def __init__(self, private_key: RSAPrivateKey, max_subkeys_per_owner: int = MAX_SUBKEYS_PER_OWNER):
        super().__init__(private_key)
        self.counts: Counter[str] = Counter()
        self.cap = OwnerSubkeyCap(max_subkeys_per_owner)

    def _drop(self, reason: str, detail: str) -> bool:
        self.counts[reason] += 1
        log.debug("DHT dropped a record (%s): %s", reason, detail)
        return False

    def validate(self, record: DHTRecord) -> bool:
        try:
            if len(record.value) > PROTOCOL_MAX_RECORD_BYTES:
                return self._drop("oversize", f"{len(record.value)} bytes > {PROTOCOL_MAX_RECORD_BYTES}")
            if record.subkey in (DHTProtocol.IS_REGULAR_VALUE, DHTProtocol.IS_DICTIONARY):
                return self._drop("unsigned", "record has no owner subkey")
            try:
                parsed = parse_subkey(MSGPackSerializer.loads(record.subkey))
            except Exception as exc:  # garbage subkeys raise many msgpack / ValueError types
                return self._drop("unsigned", f"subkey is not <tag>[owner:KEY]: {exc}")
            owner = parsed.owner_peer_id
            if not super().validate(record):
                return self._drop("bad_signature", "signature does not match the owner key")
            inner = MSGPackSerializer.loads(self.strip_value(record))
            wire = decode_wire(inner, max_bytes=PROTOCOL_MAX_RECORD_BYTES - SIGNATURE_OVERHEAD_BYTES, owner_peer_id=owner)
            check_tag(wire, parsed.tag)
            if not self.cap.admit(bytes(record.key), owner, bytes(record.subkey)):
                return self._drop("owner_cap", f"{owner} already holds {self.cap.limit} records under this key")
            return True
        except RecordRejected as exc:
            return self._drop(exc.reason, exc.detail)
        except Exception as exc:  # never let a stranger's bytes crash the DHT process
            return self._drop("malformed", f"{type(exc).__name__}: {exc}")

    def merge_with(self, other: RecordValidatorBase) -> bool:
        # Stay the only signature validator (RSASignatureValidator would swallow any other).
        return isinstance(other, SwarmRecordValidator)


async def read_counts(_dht: object, node: object) -> dict[str, int]:
    """``DHT.run_coroutine`` target: this process's drop counts (runs inside the DHT process)."""
    composite = node.protocol.record_validator  # type: ignore[attr-defined]
    for validator in getattr(composite, "_validators", [composite]):
        if isinstance(validator, SwarmRecordValidator):
            return dict(validator.counts)
    return {}


async def connected_maddrs(_dht: object, node: object) -> list[str]:
    """``DHT.run_coroutine`` target: full multiaddrs of the peers this node is connected to."""
    out = []
    for info in await node.p2p.list_peers():  # type: ignore[attr-defined]
        for addr in info.addrs:
            out.append(f"{addr}/p2p/{info.peer_id.to_base58()}")
    return out


async def remeet(_dht: object, node: object, *, maddrs: list[str], timeout: float) -> int:
    """``DHT.run_coroutine`` target: dial and ping the peers of ``maddrs`` not in the routing table.

    A ping that is answered puts the peer back in our table and (we being a full node) us in
    theirs. Returns how many answered.
    """
    import asyncio

    from hivemind.p2p import PeerID
    from hivemind.utils.multiaddr import Multiaddr  # not `multiaddr`: hivemind's copy is the one its client takes

    by_peer: dict[str, list[str]] = {}
    for m in maddrs:
        addr, sep, peer = m.rpartition("/p2p/")
        if sep and addr:
            by_peer.setdefault(peer, []).append(addr)
    table = node.protocol.routing_table  # type: ignore[attr-defined]

    async def one(peer: str, addrs: list[str]) -> bool:
        try:
            peer_id = PeerID.from_base58(peer)
            if peer_id == node.peer_id or peer_id in table:  # type: ignore[attr-defined]
                return False
            await asyncio.wait_for(node.p2p._client.connect(peer_id, [Multiaddr(a) for a in addrs]),  # type: ignore[attr-defined]
                                   timeout)
            return await asyncio.wait_for(node.protocol.call_ping(peer_id), timeout) is not None  # type: ignore[attr-defined]
        except Exception as exc:  # unreachable for now: the next round tries again
            log.debug("remeet %s failed: %r", peer, exc)
            return False

    results = await asyncio.gather(*(one(p, a) for p, a in by_peer.items()))
    return sum(results)


async def store_batch(_dht: object, node: object, *, path: str, expiration: float) -> list[bool]:
    """``DHT.run_coroutine`` target: store ``[[key, subkey, value], ...]`` read from ``path``.

    One ``store_many`` call: one lookup per key and one request per replica for all of a
    key's records (a chunked record's pieces share a key), instead of one per record.
    Returns, per record, whether the DHT confirmed it.
    """
    try:
        with open(path, "rb") as f:
            items = msgpack.unpackb(f.read(), raw=False)
    except FileNotFoundError:
        return []  # the parent gave up on this batch (its deadline passed) and removed the file
    # Read once: remove it now, so nothing is left behind even if the parent is killed.
    with contextlib.suppress(OSError):
        os.unlink(path)
    if not items:
        return []
    keys = [item[0] for item in items]
    subkeys = [item[1] for item in items]
    values = [item[2] for item in items]
    result = await node.store_many(keys, values, expiration, subkeys=subkeys)  # type: ignore[attr-defined]
    return [bool(result.get((k, sk))) for k, sk in zip(keys, subkeys)]
