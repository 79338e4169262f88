"""The SAPO game across the network lab: impaired links and a trainer behind NAT.

The same lab as test_netns_swarm.py (tests/fixtures/netns.py): host `boot` runs the
coordinator, `t0` and `t1` a trainer each on the lab LAN, `t2` a trainer behind a masquerading
router (DHT client mode); every link has 80 ms +- 20 ms one-way delay and 2 % loss. Round 1
(the first every trainer plays from its start) must end early (every peer shared its groups
before the deadline), and every trainer must have trained on two groups from the others,
the NAT'd one included, with nobody crashing.
"""

from __future__ import annotations

import pytest

from tests.fixtures.netns import Lab, impaired_lab
from tests.fixtures.netns_swarm import LabSwarm

pytestmark = [pytest.mark.slow]

STAGE_SECONDS = 40.0
DELAY, JITTER, LOSS = 0.080, 0.020, 0.02
TRAINERS = ["t0", "t1", "t2"]
EXTERNAL = 2  # groups each trainer asks of the others (--sapo-external-groups)


@pytest.fixture(scope="module")
def lab():
    yield from impaired_lab(["boot", "t0", "t1"], ["t2"], delay=DELAY, jitter=JITTER, loss=LOSS, seed=7)


def test_sapo_round_over_impaired_links_with_a_nat_peer(lab: Lab, tmp_path, tiny_model_dir, tiny_profile) -> None:
    extra = ["--sapo-local-groups", "2", "--sapo-external-groups", str(EXTERNAL), "--sapo-policy", "random",
             "--sapo-collect-seconds", "20"]
    sw = LabSwarm(lab, tmp_path / "swarm", tiny_model_dir, tiny_profile, TRAINERS, chain=False,
                  stage_seconds=STAGE_SECONDS, game="sapo", extra_trainer_args=extra)
    try:
        join_s = sw.start(timeout=300)

        def round1(host: str) -> list[dict]:
            return [e for e in sw.steps(host) if e["round"] == 1]

        sw.wait(lambda: all(round1(h) for h in TRAINERS), 300, "round 1's step on every trainer", poll=0.5)
        crashed = [n for n, s in sw.services.items() if s.proc is not None and not s.alive]
        assert not crashed, f"crashed: {crashed}\n{sw.logs()}"
        for h in TRAINERS:
            e = round1(h)[0]
            assert e["game"] == "sapo", e
            assert int(e["external_taken"]) == EXTERNAL, (
                f"{h} trained on {e['external_taken']} of the {EXTERNAL} groups it asked the others for: {e}")
        sw.wait(lambda: (1, 1) in sw.early_advances() or any(r >= 2 for _, r, _ in sw.stage_starts()), 120,
                "round 1 to end", poll=0.5)
        assert (1, 1) in sw.early_advances(), (
            f"round 1 ran into its {STAGE_SECONDS:.0f} s deadline: not every peer shared in time\n"
            f"{sw.services['coordinator'].text()[-3000:]}")
        stats = lab.stats()
        assert all(stats[h]["tx_bytes"] > 10_000 for h in TRAINERS), stats
        assert sum(s["dropped_loss"] for s in stats.values()) > 0, f"the 2 % loss never dropped a frame: {stats}"
        print(f"\nnetns lab, SAPO, {DELAY * 1000:.0f} ms +- {JITTER * 1000:.0f} ms one-way, {LOSS:.0%} loss: "
              f"join {join_s:.1f} s, round 1 {sw.stage_seconds_of(1)} s")
    finally:
        sw.close()
