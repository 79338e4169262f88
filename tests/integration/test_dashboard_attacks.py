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


async def _open_streams(url: str, sources: list[str], stack: AsyncExitStack) -> list[tuple[str, int]]:
    """Open one /api/events stream per entry of `sources` (client IPs) at once; keep the 200s open."""
    clients = {ip: await stack.enter_async_context(httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=ip), timeout=30,
        limits=httpx.Limits(max_connections=500))) for ip in set(sources)}

    async def one(ip: str) -> tuple[str, int]:
        resp = await stack.enter_async_context(clients[ip].stream("GET", f"{url}/api/events"))
        if resp.status_code == 200:
            await resp.aiter_bytes().__anext__()  # the stream really started
        return ip, resp.status_code

    return await asyncio.gather(*(one(ip) for ip in sources))


def test_one_client_burst_gets_its_share_only(capped_dashboard: DashboardProc) -> None:
    async def attack() -> None:
        async with AsyncExitStack() as stack:
            got = await _open_streams(capped_dashboard.url, ["127.0.0.1"] * 40, stack)
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
    from hivemind_exp.settings_base import SettingsError, load_settings
    from api.settings import DashboardSettings

    assert load_settings(DashboardSettings).events_max_per_client >= 1
    with pytest.raises(SettingsError, match="events_max_per_client|events-max-per-client"):
        load_settings(DashboardSettings, events_max_per_client=0)
