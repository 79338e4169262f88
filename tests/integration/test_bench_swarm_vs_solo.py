"""bench/swarm_vs_solo.py: its statistics on known data, and one whole run with a tiny model.

The run is the real thing at toy size: two `rl-swarm up` arms (1 peer, then 2 peers) on a
random 2-layer model, one round each, then evaluation of the start model and both nodes on
8 held-out GSM8K problems. The accuracies of a random model are ~0; the test checks the
plumbing and the report, not learning.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hivemind_exp.common.paths import shared_dir
from tests.fixtures.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "swarm_vs_solo.py"
GSM8K = shared_dir() / "datasets" / "gsm8k" / "train.jsonl"


def _bench():
    return load_script("bench/swarm_vs_solo.py", "swarm_vs_solo")


def test_paired_bootstrap_on_known_data() -> None:
    bench = _bench()
    same = bench.paired_bootstrap([True, False] * 20, [True, False] * 20, resamples=500)
    assert (same.diff, same.low, same.high, same.a_only, same.b_only) == (0.0, 0.0, 0.0, 0, 0)
    assert same.p_not_positive == 1.0
    better = bench.paired_bootstrap([True] * 30, [False] * 30, resamples=500)
    assert (better.diff, better.low, better.high, better.a_only) == (1.0, 1.0, 1.0, 30)
    # 12 of 40 only a solved, 4 only b: diff 0.2, standard error 0.6/sqrt(40) = 0.095, so the normal
    # approximation's 95% interval is [0.014, 0.386]; the bootstrap's should be close (steps of 1/40).
    a = [True] * 12 + [False] * 4 + [True] * 10 + [False] * 14
    b = [False] * 12 + [True] * 4 + [True] * 10 + [False] * 14
    mixed = bench.paired_bootstrap(a, b, resamples=2000, seed=3)
    assert mixed.diff == pytest.approx(0.2)
    assert mixed.low == pytest.approx(0.014, abs=0.04) and mixed.high == pytest.approx(0.386, abs=0.04)
    assert mixed.p_not_positive < 0.05
    with pytest.raises(ValueError, match="equally long"):
        bench.paired_bootstrap([True], [True, False])


@pytest.mark.skipif(not GSM8K.is_file(), reason=f"{GSM8K} is not on this machine")
def test_split_files_are_disjoint_and_rounds_use_training_problems(tmp_path: Path) -> None:
    from hivemind_exp.game.data import JsonlSource

    bench = _bench()
    split = bench.make_split(GSM8K, 25, seed=7, out_dir=tmp_path)
    held = {p.qid for p in JsonlSource(split.held_out_file).problems()}
    train = {p.qid for p in JsonlSource(split.train_file).problems()}
    assert len(held) == 25 and not held & train
    assert len(held) + len(train) == len(JsonlSource(GSM8K).problems())
    assert bench.check_rounds_disjoint(split, seed=7, rounds=range(5), questions_per_round=3) >= 3


@pytest.mark.slow
@pytest.mark.skipif(not GSM8K.is_file(), reason=f"{GSM8K} is not on this machine")
def test_bench_end_to_end_with_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    cmd = [sys.executable, str(BENCH), "--model", str(tiny_model_dir), "--device", "cpu", "--rounds", "1",
           "--peers", "2", "--held-out", "8", "--questions-per-round", "1", "--num-generations", "2",
           "--max-completion-length", "12", "--eval-batch-size", "8", "--bootstrap", "200",
           "--stage-seconds", "600", "--arm-timeout", "400", "--work-dir", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["held_out"] == 8 and report["held_out_disjoint"] is True
    assert report["grpo_steps_per_node"] == {"solo": 3, "swarm": 3} and report["steps_equal"] is True
    for arm in ("start", "solo", "swarm"):
        assert 0.0 <= report["accuracy"][arm] <= 1.0
    d = report["swarm_minus_solo"]
    assert d["ci_low"] <= d["diff"] <= d["ci_high"] and d["resamples"] == 200
    assert d["diff"] == pytest.approx(report["accuracy"]["swarm"] - report["accuracy"]["solo"])
    assert set(report["last_round_mean_reward"]["solo_by_stage"]) == {"1", "2", "3"}
    assert report["wall_seconds"]["solo"] > 0 and report["wall_seconds"]["swarm"] > 0
    # Both arms really ran: peer0 kept its identity across arms, and the swarm had 2 trainers.
    assert (work / "solo" / "run" / "peer0" / "swarm.pem").read_bytes() == \
        (work / "swarm" / "run" / "peer0" / "swarm.pem").read_bytes()
    assert (work / "swarm" / "logs" / "peer1.log").is_file() and not (work / "solo" / "logs" / "peer1.log").exists()
    assert not list(tmp_path.glob("*.jsonl")), "the bench wrote dataset files outside its work dir"
    assert "swarm - solo" in proc.stdout
