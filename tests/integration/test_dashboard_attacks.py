"""Attacks on a real dashboard process (issue 12), against the 3-peer DHT of tests/fixtures/web.py.

- Live-stream slots: the cap used to be checked before the counter moved (a burst all got in)
  and was global only (one client could take every slot). Now it is atomic, per client
  address and global: a burst from one address gets exactly its share, a burst from many
  gets exactly the global cap, and closed streams give their slots back.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tests.fixtures.web import DashboardProc, WebSwarm, launch_dashboard

pytestmark = [pytest.mark.slow]

PER_CLIENT, GLOBAL = 6, 20


@pytest.fixture(scope="module")
def capped_dashboard(web_swarm: WebSwarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardProc]:
    d = launch_dashboard(tmp_path_factory.mktemp("dash-attack"), web_swarm, None,
                         events_max_clients=GLOBAL, events_max_per_client=PER_CLIENT)
    try:
        yield d
    finally:
        d.stop()


async def _open_streams(url: str, sources: list[str], stack: AsyncExitStack,
                        spoof: bool = False) -> list[tuple[str, int]]:
    """Open one /api/events stream per entry of `sources` (client IPs) at once; keep the 200s open.

    `spoof`: each request also claims a fresh X-Forwarded-For (must not count as another client)."""
    clients = {ip: await stack.enter_async_context(httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=ip), timeout=30,
        limits=httpx.Limits(max_connections=500))) for ip in set(sources)}

    async def one(i: int, ip: str) -> tuple[str, int]:
        headers = {"X-Forwarded-For": f"198.51.100.{i % 250 + 1}"} if spoof else None
        resp = await stack.enter_async_context(clients[ip].stream("GET", f"{url}/api/events", headers=headers))
        if resp.status_code == 200:
            # The stack keeps the byte iterator referenced until it closes: a dropped async generator
            # is finalised by the event loop, which can close the stream (and free its slot) mid-burst.
            reader = resp.aiter_bytes()
            stack.push_async_callback(reader.aclose)
            await reader.__anext__()  # the stream really started
        return ip, resp.status_code

    return await asyncio.gather(*(one(i, ip) for i, ip in enumerate(sources)))


def test_one_client_burst_gets_its_share_only(capped_dashboard: DashboardProc) -> None:
    async def attack() -> None:
        async with AsyncExitStack() as stack:
            got = await _open_streams(capped_dashboard.url, ["127.0.0.1"] * 40, stack, spoof=True)
            codes = Counter(code for _, code in got)
            assert codes == {200: PER_CLIENT, 429: 40 - PER_CLIENT}, codes
            # Other clients still get in while the first holds its share.
            more = await _open_streams(capped_dashboard.url, ["127.0.0.9"] * 2, stack)
            assert [c for _, c in more] == [200, 200]
        # Every slot came back once the streams closed.
        await asyncio.sleep(0.5)
        async with AsyncExitStack() as stack:
            again = await _open_streams(capped_dashboard.url, ["127.0.0.1"] * PER_CLIENT, stack)
            assert [c for _, c in again] == [200] * PER_CLIENT

    asyncio.run(attack())


def test_many_client_burst_stops_at_the_global_cap(capped_dashboard: DashboardProc) -> None:
    sources = [f"127.0.0.{i}" for i in range(2, 8) for _ in range(PER_CLIENT + 2)]  # 6 clients x 8 = 48

    async def attack() -> None:
        async with AsyncExitStack() as stack:
            got = await _open_streams(capped_dashboard.url, sources, stack)
            ok = Counter(ip for ip, code in got if code == 200)
            assert sum(ok.values()) == GLOBAL, got
            assert max(ok.values()) <= PER_CLIENT
            assert {code for _, code in got} <= {200, 429, 503}
            health = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
            assert (await health.get(f"{capped_dashboard.url}/api/healthz")).status_code == 200

    asyncio.run(attack())


def test_settings_bound_the_caps(tmp_path: Path) -> None:
    from hivemind_exp.common.settings_base import SettingsError, load_settings
    from api.settings import DashboardSettings

    assert load_settings(DashboardSettings).events_max_per_client >= 1
    with pytest.raises(SettingsError, match="events_max_per_client|events-max-per-client"):
        load_settings(DashboardSettings, events_max_per_client=0)


def _signer_for_many(keys_by_owner: dict[bytes, object]) -> object:
    """A DHT validator that signs each record with the key of the identity its subkey names:
    one process publishing validly signed records for many identities (what a flood is)."""
    import dataclasses

    from hivemind.dht.validation import DHTRecord, RecordValidatorBase
    from hivemind.utils.serializer import MSGPackSerializer

    class ManyIdentities(RecordValidatorBase):
        def validate(self, record: DHTRecord) -> bool:
            return True

        def sign_value(self, record: DHTRecord) -> bytes:
            for ssh, key in keys_by_owner.items():
                if b"[owner:" + ssh + b"]" in record.subkey:
                    sig = key.sign(MSGPackSerializer.dumps(dataclasses.astuple(record)))  # type: ignore[attr-defined]
                    return record.value + b"[signature:" + sig + b"]"
            return record.value

        def strip_value(self, record: DHTRecord) -> bytes:
            i = record.value.rfind(b"[signature:")
            return record.value[:i] if i >= 0 else record.value

    return ManyIdentities()


def test_identity_flood_through_the_dht_keeps_real_peers_on_the_dashboard(
        web_swarm: WebSwarm, tmp_path_factory: pytest.TempPathFactory) -> None:
    """40 fresh identities heartbeat into the real peer directory, each seen later than any real
    peer. A dashboard tracking 5 peers keeps the 3 real ones (reward records in 3 rounds, one is
    the local trainer) and gives the flood only the slots left over."""
    import time

    from hivemind.dht import DHT
    from hivemind.utils.timed_storage import get_dht_time

    from hivemind_exp.swarm.identity import ensure_identity, load_identity
    from hivemind_exp.swarm import keys
    from hivemind_exp.swarm.records import HeartbeatWire, encode_wire

    base = tmp_path_factory.mktemp("flood")
    idents = [load_identity(ensure_identity(base / f"fake{i}.pem")) for i in range(40)]
    signer = _signer_for_many({i.public_key_ssh: i.hivemind_private_key() for i in idents})
    dht = DHT(initial_peers=web_swarm.bootstrap, start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"],
              identity_path=str(idents[0].path), check_if_identity_free=False, wait_timeout=3,
              record_validators=[signer])
    d = launch_dashboard(base / "dash", web_swarm, None, max_peers=5)
    try:
        for ident in idents:
            wire = HeartbeatWire(peer_id=ident.peer_id, name="fresh-identity", last_seen=time.time() + 60)
            dht.store(keys.peers_key("rl_swarm"), encode_wire(wire), get_dht_time() + 600,
                      subkey=keys.make_subkey("", ident.public_key_ssh))
        fake = {i.peer_id for i in idents}
        deadline = time.time() + 60
        nodes: set[str] = set()
        while time.time() < deadline:
            nodes = {n["peer_id"] for n in d.get("/api/nodes").json()["nodes"]}
            if nodes & fake:
                break
            time.sleep(0.5)
        assert nodes & fake, "the flood never reached the dashboard"
        time.sleep(3)  # a few more polls with the whole flood in the directory
        nodes = {n["peer_id"] for n in d.get("/api/nodes").json()["nodes"]}
        assert set(web_swarm.peer_ids) <= nodes and len(nodes) == 5, nodes
        board = {e["peer_id"] for e in d.get("/api/leaderboard", params={"limit": 500}).json()["entries"]}
        assert set(web_swarm.peer_ids) <= board
    finally:
        dht.shutdown()
        d.stop()
