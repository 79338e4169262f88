"""The built dashboard UI in headless Chromium, against the real swarm + chain + dashboard service.

Drives web/ui/e2e/check-dashboard.mjs (playwright-core from the repository's node_modules,
the system's /usr/bin/chromium). Screenshots land in test-output/ at the repository root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hivemind_exp.swarm.names import peer_name
from tests.fixtures.web import CURRENT_ROUND, REPO, DashboardProc, WebSwarm

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = REPO / "web" / "ui" / "e2e" / "check-dashboard.mjs"
OUT = REPO / "test-output"

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.chain]


def test_dashboard_in_a_browser(dashboard: DashboardProc, web_swarm: WebSwarm) -> None:
    node = shutil.which("node")
    if node is None or not CHROMIUM.exists() or not (REPO / "node_modules" / "playwright-core").is_dir():
        pytest.skip("needs node, /usr/bin/chromium and playwright-core (npm install at the repository root)")
    target = web_swarm.peer_ids[0]
    proc = subprocess.run(
        [node, str(SCRIPT), "--url", dashboard.url, "--peers", str(len(web_swarm.peer_ids)),
         "--search", peer_name(target), "--round", str(CURRENT_ROUND), "--out", str(OUT)],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result from the browser script (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    seen = json.loads(lines[-1])
    assert seen["ok"], f"{seen.get('error')}\n{json.dumps(seen, indent=1)}\n{proc.stderr[-2000:]}"
    assert seen["round"] == str(CURRENT_ROUND) and seen["stage"] == "critique"
    assert seen["chartPoints"] >= 3 * CURRENT_ROUND
    assert sorted(seen["leaderboardNames"]) == sorted(peer_name(p) for p in web_swarm.peer_ids)
    assert seen["gossipEntries"] >= 1
    assert seen["searchResult"] == [peer_name(target)]
    assert seen["nodeCount"].startswith("3")
    assert peer_name(dashboard.local_peer_id) in seen["meCard"]
    for shot in ("dashboard-desktop.png", "dashboard-search.png", "dashboard-phone.png"):
        assert (OUT / shot).stat().st_size > 10_000, shot
