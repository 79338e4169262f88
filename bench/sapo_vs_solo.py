"""SAPO: does a node learn more among peers than alone? (`bench/swarm_vs_solo.py --game sapo`)

Both arms run the product's own SAPO code (`SapoPlayer`, `GRPOEngine`, `ReasoningGymSource`,
the rubric) in this one process, peers joined by the in-memory transport (same record
schemas and checks as the DHT; no network), one arm after the other:

  solo:  the focal node alone: I own questions per round, J = 0;
  swarm: the same node (same seed, same own questions, same sampling seed) among N - 1 other
         peers, every peer taking J external groups per round (policy --policy).

Every round each peer samples and publishes, then each collects, selects and makes one GRPO
step, so the focal node makes the same number of steps in both arms. Held-out problems come
from the same task mix with held-out seeds that no arm trains on (asserted, by spec and by
question text). Prints start / solo / swarm held-out accuracy with paired-bootstrap 95% CIs,
each arm's cumulative training reward (the SAPO paper's measure), wall times and the exact
settings; writes a PNG of held-out accuracy and mean reward per round for both arms; the LAST
line is one JSON object.

    .venv/bin/python bench/swarm_vs_solo.py --game sapo                 # CPU: see --help for the budget
    .venv/bin/python bench/swarm_vs_solo.py --game sapo --device cuda --peers 8 --rounds 200 --completions 8
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--game", default="sapo", choices=("sapo",), help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=24, help="rounds (= GRPO steps of the focal node) per arm")
    p.add_argument("--peers", type=int, default=3, help="swarm size of the swarm arm (solo has 1)")
    p.add_argument("--local", type=int, default=4, help="I: own questions per round")
    p.add_argument("--external", type=int, default=4, help="J: external groups per round in the swarm arm")
    p.add_argument("--completions", type=int, default=4, help="G: completions per question")
    p.add_argument("--max-tokens", type=int, default=48, help="completion token cap (training and evaluation)")
    p.add_argument("--policy", default="signal", choices=("signal", "random", "best"), help="external-group policy")
    p.add_argument("--learning-rate", type=float, default=2e-5, help="AdamW learning rate")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--format-weight", type=float, default=None, help="weight of the format reward [default: the "
                   "game's, hivemind_exp.sapo.rubric.FORMAT_WEIGHT]")
    p.add_argument("--solo-only", action="store_true", help="run the solo arm alone (does the trainer learn at all?)")
    p.add_argument("--held-out", type=int, default=128, help="held-out problems (held-out seeds of the same mix; at "
                   "most the mix's held_out_reserve, the questions training never draws)")
    p.add_argument("--eval-every", type=int, default=6, help="evaluate both arms' focal node every K rounds")
    p.add_argument("--task-mix", type=Path, help="task mix YAML [default: the shipped default mix]")
    p.add_argument("--model", default="embedded", help="starting model ('embedded' SmolLM2-135M, a dir, or a hub id)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all)")
    p.add_argument("--seed", type=int, default=42, help="seed of peer identities, sampling and the bootstrap")
    p.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples")
    p.add_argument("--plot", type=Path, default=Path("runs/bench/sapo_vs_solo.png"), help="where to write the PNG")
    p.add_argument("--events", type=Path, help="also write every step event as JSON lines here")
    args = p.parse_args(argv)
    checks = [
        (args.rounds >= 1, "--rounds must be >= 1"), (args.peers >= 2, "--peers must be >= 2 (the swarm arm)"),
        (args.local >= 1, "--local must be >= 1"), (args.external >= 1, "--external must be >= 1"),
        (args.completions >= 2, "--completions must be >= 2 (GRPO compares within a group)"),
        (args.held_out >= 10, "--held-out must be >= 10"), (args.eval_every >= 1, "--eval-every must be >= 1"),
        (args.bootstrap >= 100, "--bootstrap must be >= 100"),
    ]
    for ok, msg in checks:
        if not ok:
            p.error(msg)
    return args


def say(msg: str) -> None:
    print(f"[sapo-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fake_peer_id(seed: int, i: int) -> str:
    """A base58 string shaped like a peer ID (the in-memory transport checks only the shape)."""
    n = int.from_bytes(hashlib.sha256(f"bench:{seed}:{i}".encode()).digest(), "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out += BASE58[r]
    return "Qm" + out[:44].ljust(44, "1")


@dataclass
class Arm:
    name: str
    rounds: list[dict[str, Any]] = field(default_factory=list)  # focal node's step events
    all_rewards: list[float] = field(default_factory=list)  # every peer's mean reward, every round
    evals: dict[int, float] = field(default_factory=dict)  # rounds done -> held-out accuracy
    final_solved: list[bool] = field(default_factory=list)
    final_format: float = 0.0
    seconds: float = 0.0
    trained_questions: set[str] = field(default_factory=set)


def make_rubric(args: argparse.Namespace) -> Any:
    from hivemind_exp.sapo.rubric import FORMAT_WEIGHT, sapo_rubric

    return sapo_rubric(format_weight=FORMAT_WEIGHT if args.format_weight is None else args.format_weight)


def run_arm(name: str, n_peers: int, external: int, args: argparse.Namespace, base_model: Any, tokenizer: Any,
            source: Any, held_out: list[Any], device: str, events_file: Any) -> Arm:
    from hivemind_exp.common.events import MemoryEvents
    from hivemind_exp.sapo.evaluation import evaluate_tasks
    from hivemind_exp.sapo.game import SapoParams, SapoPlayer
    from hivemind_exp.sapo.rubric import sapo_prompt
    from hivemind_exp.swarm.memory_transport import MemorySwarm
    from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams

    arm = Arm(name)
    t0 = time.monotonic()
    swarm = MemorySwarm()
    rubric = make_rubric(args)
    players = []
    for i in range(n_peers):
        pid = fake_peer_id(args.seed, i)
        seed = int.from_bytes(hashlib.sha256(f"{args.seed}:{pid}".encode()).digest()[:4], "big")
        params = GRPOParams(num_generations=args.completions, max_completion_length=args.max_tokens,
                            max_prompt_length=512, temperature=args.temperature, learning_rate=args.learning_rate,
                            beta=0.0, seed=seed, num_threads=args.threads, generation_batch_size=64,
                            micro_batch_size=16)
        engine = GRPOEngine(copy.deepcopy(base_model), tokenizer, params, device=device)
        transport = swarm.transport(pid)
        transport.heartbeat()
        sapo = SapoParams(local_groups=args.local, external_groups=external, policy=args.policy,
                          collect_seconds=0.0)
        players.append(SapoPlayer(engine, transport, source, rubric, sapo_prompt, sapo, node_seed=seed,
                                  events=MemoryEvents()))
    focal = players[0]

    def evaluate(done: int) -> None:
        res = evaluate_tasks(focal.engine, held_out, source, rubric, sapo_prompt, max_new_tokens=args.max_tokens)
        arm.evals[done] = res.accuracy
        arm.final_solved, arm.final_format = res.solved, res.format_rate
        say(f"{name}: after {done} round(s) held-out accuracy {res.accuracy:.3f} (format {res.format_rate:.2f}, "
            f"{res.seconds:.0f} s) {res.per_task}")

    for r in range(args.rounds):
        tick = time.monotonic()
        for pl in players:  # as a node's heartbeat thread does: stay in the peer directory
            pl.transport.heartbeat()
        sampled = [pl.sample(r) for pl in players]  # everyone publishes before anyone collects
        for pl, smp in zip(players, sampled):
            out = pl.learn(smp)
            arm.all_rewards.append(out.mean_reward)
            for g in out.local + out.taken:
                if pl is focal:
                    arm.trained_questions.add(g.problem.question)
            if pl is focal:
                arm.rounds.append(out.event)
                if events_file is not None:
                    events_file.write(json.dumps({"arm": name, **out.event}) + "\n")
        ev = arm.rounds[-1]
        say(f"{name}: round {r + 1}/{args.rounds} in {time.monotonic() - tick:.0f} s: focal mean reward "
            f"{ev['mean_reward']:.3f}, correct {ev['local_correct']:.2f}, took {ev['external_taken']} external "
            f"({ev['external_trained']} with signal)")
        if (r + 1) % args.eval_every == 0 or r + 1 == args.rounds:
            evaluate(r + 1)
    arm.seconds = time.monotonic() - t0
    players.clear()  # free this arm's engines before the next arm runs
    focal = None  # (not `del`: the `evaluate` closure refers to it)
    gc.collect()
    return arm


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    import torch

    from hivemind_exp.trainer.model_source import load_model_and_tokenizer
    from hivemind_exp.trainer.profiles import detect_device
    from hivemind_exp.sapo.evaluation import evaluate_tasks
    from hivemind_exp.sapo.rubric import sapo_prompt
    from hivemind_exp.trainer.profiles import CONFIG_ROOT, DEFAULT_TASK_MIX
    from hivemind_exp.sapo.tasks import ReasoningGymSource, TaskMix

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from swarm_vs_solo import paired_bootstrap  # one bootstrap for both games

    device = detect_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    mix = TaskMix.from_yaml(args.task_mix or CONFIG_ROOT / DEFAULT_TASK_MIX)
    if args.held_out > mix.held_out_reserve:
        # Training skips only the first held_out_reserve held-out questions; more could repeat a trained one.
        print(f"error: --held-out {args.held_out} is larger than the mix's held_out_reserve "
              f"({mix.held_out_reserve}); lower --held-out or raise held_out_reserve in the mix", file=sys.stderr)
        return 2
    source = ReasoningGymSource(mix)
    held_out = source.held_out(args.held_out)
    say(f"device {device}, {torch.get_num_threads()} threads; tasks {', '.join(source.tasks)}; "
        f"{len(held_out)} held-out problems")
    base_model, tokenizer = load_model_and_tokenizer(args.model, device=device)
    rubric = make_rubric(args)

    from hivemind_exp.trainer.params import GRPOParams
    from hivemind_exp.trainer.sampling import Sampler
    from hivemind_exp.trainer.threads import configure_torch_threads

    # Generation only (never changes the weights): a Sampler, no engine, optimizer or model copy;
    # the threads the arms' engines will use.
    configure_torch_threads(args.threads)
    probe = Sampler(base_model, tokenizer, GRPOParams(max_completion_length=args.max_tokens), device=device)
    start = evaluate_tasks(probe, held_out, source, rubric, sapo_prompt, max_new_tokens=args.max_tokens)
    del probe
    gc.collect()
    say(f"start: held-out accuracy {start.accuracy:.3f} (format {start.format_rate:.2f}) {start.per_task}")

    events_file = args.events.open("w") if args.events else None
    try:
        solo = run_arm("solo", 1, 0, args, base_model, tokenizer, source, held_out, device, events_file)
        swarm = None if args.solo_only else run_arm("swarm", args.peers, args.external, args, base_model, tokenizer,
                                                    source, held_out, device, events_file)
    finally:
        if events_file is not None:
            events_file.close()
    held_texts = {p.question for p in held_out}
    overlap = (solo.trained_questions | (swarm.trained_questions if swarm else set())) & held_texts
    assert not overlap, f"{len(overlap)} held-out question(s) were trained on"
    assert all(source.is_held_out_seed(p.spec.seed) for p in held_out)
    if swarm is None:
        return report_solo(args, solo, start, len(held_out), source, paired_bootstrap, started, load0, device)
    assert len(solo.rounds) == len(swarm.rounds) == args.rounds, "arms made different numbers of steps"

    diff = paired_bootstrap(swarm.final_solved, solo.final_solved, args.bootstrap, args.seed)
    solo_vs_start = paired_bootstrap(solo.final_solved, start.solved, args.bootstrap, args.seed + 1)
    swarm_vs_start = paired_bootstrap(swarm.final_solved, start.solved, args.bootstrap, args.seed + 2)
    cum = {a.name: round(sum(e["mean_reward"] for e in a.rounds), 3) for a in (solo, swarm)}
    swarm_all_cum = round(sum(swarm.all_rewards) / args.peers, 3)
    plot = write_plot(args.plot, solo, swarm, start.accuracy)
    total = time.monotonic() - started

    print()
    print(f"SAPO swarm vs solo: {args.rounds} rounds, I={args.local}, J={args.external} (swarm), G={args.completions}, "
          f"<= {args.max_tokens} tokens, lr {args.learning_rate}, policy {args.policy}, {args.peers} peers")
    print(f"  held-out accuracy ({len(held_out)} problems): start {start.accuracy:.3f}, solo "
          f"{solo.evals[args.rounds]:.3f}, swarm {swarm.evals[args.rounds]:.3f}")
    for label, d in (("solo - start", solo_vs_start), ("swarm - start", swarm_vs_start), ("swarm - solo", diff)):
        print(f"  {label:<14} {d.diff:+.3f}  95% CI [{d.low:+.3f}, {d.high:+.3f}]")
    print(f"  cumulative training reward of the focal node: solo {cum['solo']:.3f}, swarm {cum['swarm']:.3f} "
          f"(swarm mean over peers {swarm_all_cum:.3f})")
    print(f"  wall: solo {solo.seconds / 60:.1f} min, swarm {swarm.seconds / 60:.1f} min, total {total / 60:.1f} min; "
          f"plot {plot}")
    report = {
        "bench": "swarm_vs_solo", "game": "sapo", "model": args.model, "device": device,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tasks": list(source.tasks), "held_out": len(held_out), "held_out_disjoint": True,
        "accuracy": {"start": start.accuracy, "solo": solo.evals[args.rounds], "swarm": swarm.evals[args.rounds]},
        "accuracy_by_round": {"solo": solo.evals, "swarm": swarm.evals},
        "per_task_start": start.per_task,
        "format_rate": {"start": start.format_rate, "solo": solo.final_format, "swarm": swarm.final_format},
        "swarm_minus_solo": diff.to_dict(), "solo_minus_start": solo_vs_start.to_dict(),
        "swarm_minus_start": swarm_vs_start.to_dict(),
        "cumulative_reward": {**cum, "swarm_all_peers_mean": swarm_all_cum},
        "mean_reward_by_round": {"solo": [e["mean_reward"] for e in solo.rounds],
                                 "swarm": [e["mean_reward"] for e in swarm.rounds]},
        "external_taken_per_round": [e["external_taken"] for e in swarm.rounds],
        "external_with_signal_per_round": [e["external_trained"] for e in swarm.rounds],
        "wall_seconds": {"solo": round(solo.seconds, 1), "swarm": round(swarm.seconds, 1), "total": round(total, 1)},
        "loadavg": {"start": round(load0, 2), "end": round(os.getloadavg()[0], 2)}, "cpus": os.cpu_count(),
        "plot": str(plot),
    }
    print(json.dumps(report))
    return 0


def report_solo(args: argparse.Namespace, solo: Arm, start: Any, n_held: int, source: Any, paired_bootstrap: Any,
                started: float, load0: float, device: str) -> int:
    """--solo-only: does the trainer learn at all (solo - start)?"""
    d = paired_bootstrap(solo.final_solved, start.solved, args.bootstrap, args.seed + 1)
    total = time.monotonic() - started
    print()
    print(f"SAPO solo only: {args.rounds} rounds, I={args.local}, G={args.completions}, <= {args.max_tokens} tokens, "
          f"lr {args.learning_rate}, format weight {make_rubric(args).max_reward - 1.0:g}")
    print(f"  held-out accuracy ({n_held} problems): start {start.accuracy:.3f}, solo {solo.evals[args.rounds]:.3f}; "
          f"format {start.format_rate:.2f} -> {solo.final_format:.2f}")
    print(f"  solo - start   {d.diff:+.3f}  95% CI [{d.low:+.3f}, {d.high:+.3f}]; wall {total / 60:.1f} min")
    print(json.dumps({
        "bench": "swarm_vs_solo", "game": "sapo", "solo_only": True, "device": device,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tasks": list(source.tasks), "held_out": n_held,
        "accuracy": {"start": start.accuracy, "solo": solo.evals[args.rounds]},
        "accuracy_by_round": {"solo": solo.evals}, "per_task_start": start.per_task,
        "format_rate": {"start": start.format_rate, "solo": solo.final_format},
        "solo_minus_start": d.to_dict(),
        "mean_reward_by_round": {"solo": [e["mean_reward"] for e in solo.rounds]},
        "wall_seconds": {"solo": round(solo.seconds, 1), "total": round(total, 1)},
        "loadavg": {"start": round(load0, 2), "end": round(os.getloadavg()[0], 2)}, "cpus": os.cpu_count(),
    }))
    return 0


def write_plot(path: Path, solo: Arm, swarm: Arm, start_acc: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, colour in ((solo, "tab:blue"), (swarm, "tab:orange")):
        xs = [0] + sorted(arm.evals)
        ax1.plot(xs, [start_acc] + [arm.evals[x] for x in xs[1:]], marker="o", color=colour, label=arm.name)
        ax2.plot(range(1, len(arm.rounds) + 1), [e["mean_reward"] for e in arm.rounds], color=colour, label=arm.name)
    ax1.set(title="held-out accuracy (focal node)", xlabel="round", ylabel="accuracy")
    ax2.set(title="mean training reward (focal node's own groups)", xlabel="round", ylabel="reward")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
