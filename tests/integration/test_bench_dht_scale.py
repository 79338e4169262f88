"""bench/dht_scale.py at toy size: 3 real peers (each its own DHT process) on loopback, one round.

Checks the bench's plumbing and its own verdict (every record seen by every peer, nobody
lost), the capped and uncapped stage reads, that its JSON carries every figure it prints,
and that no peer process outlives it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "dht_scale.py"

pytestmark = pytest.mark.slow  # multi-process: DHT child processes and p2p daemons


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_three_peer_swarm_round_trip() -> None:
    before = _descendants()
    proc = subprocess.run([sys.executable, str(BENCH), "--peers", "3", "--rounds", "1", "--idle-seconds", "1",
                           "--spread", "0.5", "--visibility-timeout", "20", "--max-peers-per-read", "2",
                           "--uncapped-read", "--read-settle-seconds", "0.5"],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    r = summary["sizes"]["3"]
    assert r["records"] == 3 and r["records_seen_by_all"] == 3
    assert r["reader_pairs_lost"] == 0 and r["publish_failed"] == 0
    assert r["directory_missing_at_end"] == 0 and r["peers_alive_at_end"] == 3
    # Capped at 2 of 3 peers, each read holds exactly 2 and every peer is read by someone;
    # the uncapped read holds all 3.
    assert r["stage_read_cap"] == 2 and r["stage_read_peers"] == 2
    assert r["stage_read_short"] == 0 and r["stage_read_over_cap"] == 0 and r["stage_read_unread_peers"] == 0
    assert r["stage_read_stored_peers"] == 3 and "load average" in r["uptime_at_read"]
    assert r["stage_read_uncapped_short"] == 0 and r["stage_read_uncapped_wall_p50_s"] > 0
    assert 0 <= r["visibility_p50_s"] <= r["visibility_p99_s"] <= r["visibility_max_s"] < 25
    assert r["rss_mb_mean"] > 0 and r["pss_mb_total"] > 0 and r["join_p50_s"] > 0
    assert "load average" in r["uptime_before"] and "load average" in proc.stdout
    assert "target p99 < 1 s" in proc.stdout
    # A clean close leaves nothing to kill (torch_shm_manager is given the moment it needs to quit).
    assert r["processes_killed_at_shutdown"] == 0
    # Every peer (worker, DHT child, p2pd) is gone once the bench returns.
    assert not (_descendants() - before)
