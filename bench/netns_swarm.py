"""The swarm across a real network: N hosts as network namespaces, with and without impaired links.

For each host count (default 4 and 8: one host runs the coordinator, and the chain with
--chain, every other host one tiny-model trainer) and each link setting (loopback: the same
services all in one host on 127.0.0.1, the baseline; clean: one host each, no impairment;
impaired: 80 ms +- 20 ms one-way delay with 2 % loss, shaped by the lab's user-space switch,
see tests/fixtures/netns.py), it starts the services, plays round 0 (which starts before the
trainers are up) and round 1 (the measured one), and prints:

- join_s: from starting the services until every trainer logged "joined the swarm";
- stage_s: wall seconds of each stage of round 1 (coordinator stage start to the next);
- records_missing: over every trainer's stage-2/3 steps of round 1, peers whose stage-1
  answers did not reach it (trainers - peers seen), i.e. records lost or late (SAPO: external
  groups a peer wanted but did not get);
- frames_lost: frames the switch dropped for loss during round 1;
- tx_bytes_per_peer_round: bytes each trainer sent during round 1 (its switch port), mean/max
  (0 on loopback, where nothing crosses the switch).

The LAST line is one JSON object with every configuration. Needs root (namespaces); about
12 minutes on 2 CPU cores. `--hosts 4 --links impaired` runs a single configuration.

    sudo .venv/bin/python bench/netns_swarm.py
    sudo .venv/bin/python bench/netns_swarm.py --hosts 4 8 --links clean impaired --chain
    sudo .venv/bin/python bench/netns_swarm.py --game sapo --hosts 4 --links impaired
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.netns import Lab, netns_unavailable  # noqa: E402
from tests.fixtures.netns_swarm import LabSwarm  # noqa: E402
from tests.fixtures.tiny_model import make_tiny_model_dir  # noqa: E402

PROFILE = ("model: tiny\ndtype: float32\nquestions_per_round: 2\n"
           "grpo:\n  num_generations: 3\n  max_prompt_length: 1024\n  max_completion_length: 24\n"
           "  temperature: 1.0\n  learning_rate: 1.0e-4\n  micro_batch_size: 8\n  generation_batch_size: 16\n")


def run_one(work: Path, model: Path, profile: Path, hosts: int, links: str, chain: bool,
            stage_seconds: float, delay: float, jitter: float, loss: float, game: str = "three-stage") -> dict:
    trainers = [f"t{i}" for i in range(hosts - 1)]
    impair, loopback = links == "impaired", links == "loopback"
    with Lab(["boot", *trainers], seed=hosts) as lab:
        if impair:
            lab.impair("*", delay=delay, jitter=jitter, loss=loss)
        extra = (["--sapo-local-groups", "2", "--sapo-external-groups", "2", "--sapo-policy", "random",
                  "--sapo-collect-seconds", "20"] if game == "sapo" else [])
        sw = LabSwarm(lab, work, model, profile, trainers, chain=chain, stage_seconds=stage_seconds, game=game,
                      extra_trainer_args=extra, loopback=loopback)
        try:
            join_s = sw.start(timeout=600)

            def started(r: int) -> bool:
                return any(rr == r and s == 1 for _, rr, s in sw.stage_starts())

            sw.wait(lambda: started(1), 600, "round 1 to start", poll=0.2)
            before = lab.stats()
            sw.wait(lambda: started(2), 900, "round 1 to finish", poll=0.2)
            after = lab.stats()
            stage_s = sw.stage_seconds_of(1)
            missing = 0
            for h in trainers:
                for e in sw.steps(h):
                    if game == "sapo" and e["round"] == 1:  # groups it wanted from others but did not get
                        missing += max(0, min(2, len(trainers) - 1) - int(e.get("external_taken", 0)))
                    elif e["round"] == 1 and e["stage"] in (2, 3):
                        missing += max(0, len(trainers) - int(e.get("peers_seen", 0)))
            # on loopback nothing crosses the switch: no byte counts
            tx = [0] if loopback else [after[h]["tx_bytes"] - before[h]["tx_bytes"] for h in trainers]
            lost = sum(after[h]["dropped_loss"] - before[h]["dropped_loss"] for h in after)
            early = sorted(s for r, s in sw.early_advances() if r == 1)
            crashed = [n for n, s in sw.services.items() if s.proc is not None and not s.alive]
        finally:
            sw.close()
    return dict(game=game, hosts=hosts, trainers=len(trainers), links=links, chain=chain, join_s=round(join_s, 1),
                stage_s=stage_s, round_s=round(sum(stage_s.values()), 1), early_advanced_stages=early,
                records_missing=missing, frames_lost=lost,
                tx_bytes_per_peer_round=dict(mean=int(statistics.mean(tx)), max=max(tx)), crashed=crashed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, nargs="+", default=[4, 8], help="hosts per lab (>= 2)")
    ap.add_argument("--links", choices=["loopback", "clean", "impaired"], nargs="+",
                    default=["loopback", "clean", "impaired"],
                    help="loopback: every service in one host on 127.0.0.1 (the baseline); clean: one host each, "
                    "no impairment; impaired: --delay/--jitter/--loss on every link")
    ap.add_argument("--chain", action="store_true", help="run anvil + contract on the boot host, trainers in wallet mode")
    ap.add_argument("--game", choices=["three-stage", "sapo"], default="three-stage",
                    help="sapo: one stage a round, 2 own + up to 2 external groups per peer (records_missing counts "
                    "external groups not taken)")
    ap.add_argument("--stage-seconds", type=float, default=40.0)
    ap.add_argument("--delay", type=float, default=0.080, help="one-way delay per link pair, seconds")
    ap.add_argument("--jitter", type=float, default=0.020)
    ap.add_argument("--loss", type=float, default=0.02)
    args = ap.parse_args(argv)
    why = netns_unavailable()
    if why:
        print(f"netns_swarm bench: {why}", file=sys.stderr)
        return 2
    if any(h < 2 or h > 9 for h in args.hosts):
        print("netns_swarm bench: --hosts must be 2..9 (anvil funds 9 wallets; one host is the coordinator)",
              file=sys.stderr)
        return 2
    load = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="netns-bench-") as tmp:
        model = make_tiny_model_dir(Path(tmp) / "model")
        profile = Path(tmp) / "tiny.yaml"
        profile.write_text(PROFILE)
        for hosts in args.hosts:
            for mode in args.links:
                t0 = time.monotonic()
                res = run_one(Path(tmp) / f"h{hosts}-{mode}", model, profile, hosts, mode, args.chain,
                              args.stage_seconds, args.delay, args.jitter, args.loss, args.game)
                res["wall_s"] = round(time.monotonic() - t0, 1)
                results.append(res)
                print(f"{args.game}, {hosts} hosts ({res['trainers']} trainers), links {mode}: "
                      f"join {res['join_s']} s; round 1 stages {res['stage_s']} (early: {res['early_advanced_stages']}); "
                      f"records missing {res['records_missing']}; frames lost {res['frames_lost']}; "
                      f"sent per peer per round {res['tx_bytes_per_peer_round']['mean'] / 1e6:.2f} MB mean, "
                      f"{res['tx_bytes_per_peer_round']['max'] / 1e6:.2f} MB max; crashed {res['crashed'] or 'none'}",
                      flush=True)
    print(json.dumps(dict(bench="netns_swarm", cpus=os.cpu_count(), loadavg_at_start=[round(x, 2) for x in load],
                          impairment=dict(delay_s=args.delay, jitter_s=args.jitter, loss=args.loss),
                          results=results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
