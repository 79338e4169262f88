"""Does training in a swarm beat training alone? A/B benchmark over the real processes.

From the same starting model, swarm seed and number of GRPO steps, it trains
  (a) solo:  one node alone (`rl-swarm up --num-peers 1`: it still plays all three stages,
             but its critique/decide prompts only show its own answer), and
  (b) swarm: the same node (same identity) with --peers - 1 others (`--num-peers N`),
one arm after the other (never both at once), then evaluates the starting model and
each arm's node ("peer0") greedily on held-out GSM8K problems that no arm trained on.

The held-out slice and the training slice of the dataset are written as two JSONL files
in a temporary directory (the dataset is never copied into the repo); the held-out set is
checked to be disjoint, by question hash, from the training file and from every round's
question set the nodes played.

Prints both accuracies, each arm's mean GRPO reward over its last round, the accuracy
difference with a paired bootstrap confidence interval over held-out problems, and the
wall times. The LAST line is one JSON object.

    .venv/bin/python bench/swarm_vs_solo.py                      # CPU budget: ~30-60 min on 2 cores
    .venv/bin/python bench/swarm_vs_solo.py --device cuda --rounds 20 --held-out 500
    .venv/bin/python bench/swarm_vs_solo.py --game sapo [...]    # the SAPO game: bench/sapo_vs_solo.py

Sizes per GRPO step (questions per round, completions per question, completion length)
come from the device's stock profile for the model (hivemind_exp/configs/<cpu|gpu|mac>/)
unless --config or the flags below override them; the bench writes the profile it used
into its work directory and prints it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hivemind_exp.common.paths import shared_dir

DEFAULT_DATASET = shared_dir() / "datasets" / "gsm8k" / "train.jsonl"
# The node's log line after each GRPO step (hivemind_exp/services/node.py, TrainerNode.run_stage).
UP_STARTED = re.compile(r"started (\S+) \(pid (\d+),")
NODE = "peer0"  # the node compared across arms


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message names the step and where to look."""


# ---------------------------------------------------------------------------------------
# Arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--game", default="three-stage", choices=("three-stage", "sapo"),
                   help="three-stage (GSM8K, real processes) or sapo (ReasoningGym; see --game sapo --help)")
    p.add_argument("--rounds", type=int, default=2, help="rounds each arm trains (3 GRPO steps per round)")
    p.add_argument("--peers", type=int, default=3, help="swarm size of the swarm arm (the solo arm has 1)")
    p.add_argument("--model", default="embedded", help="starting model: 'embedded' (SmolLM2-135M), a checkpoint "
                   "directory or a Hugging Face id")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="where to train and evaluate")
    p.add_argument("--held-out", type=int, default=60, help="held-out problems evaluated (kept out of training)")
    p.add_argument("--dataset-path", type=Path, default=DEFAULT_DATASET, help="GSM8K-format JSONL to split")
    p.add_argument("--seed", type=int, default=42, help="swarm seed (round questions, sampling), held-out split "
                   "and bootstrap seed")
    p.add_argument("--config", type=Path, help="base device profile YAML [default: the device's stock profile "
                   "for --model]")
    p.add_argument("--questions-per-round", type=int, help="override the profile's questions per round")
    p.add_argument("--num-generations", type=int, help="override the profile's completions per question")
    p.add_argument("--max-completion-length", type=int, help="override the profile's completion length (tokens)")
    p.add_argument("--learning-rate", type=float, help="override the profile's learning rate")
    p.add_argument("--eval-max-new-tokens", type=int, help="longest evaluation answer [default: the training "
                   "completion length, so evaluation asks for what training rewarded]")
    p.add_argument("--eval-batch-size", type=int, default=16, help="held-out problems decoded together")
    p.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples")
    p.add_argument("--stage-seconds", type=float, default=3600.0, help="stage deadline; the coordinator moves on "
                   "as soon as every peer published, so this is only a safety net for slow machines")
    p.add_argument("--arm-timeout", type=float, default=3600.0, help="seconds one arm may train before it is stopped")
    p.add_argument("--cpus", help="pin the bench and every process it starts to these CPU ids, e.g. 0 or 0,1 "
                   "(torch then uses one thread per CPU); on a shared, oversubscribed machine two OpenMP threads "
                   "per process spin against each other and one pinned CPU is several times faster")
    p.add_argument("--chain", action="store_true", help="also run the local anvil chain (rewards on chain)")
    p.add_argument("--work-dir", type=Path, help="keep run dirs, logs, split files here [default: a temp dir, "
                   "deleted at the end unless --keep]")
    p.add_argument("--keep", action="store_true", help="keep the temp work dir (checkpoints, logs)")
    args = p.parse_args(argv)
    checks = [
        (args.rounds >= 1, "--rounds must be >= 1"),
        (args.peers >= 2, "--peers must be >= 2 (the swarm arm needs company; the solo arm is always 1 peer)"),
        (args.peers <= 16, "--peers must be <= 16 (rl-swarm up's limit)"),
        (args.held_out >= 2, "--held-out must be >= 2 problems"),
        (args.bootstrap >= 100, "--bootstrap must be >= 100 resamples for a usable interval"),
        (args.eval_batch_size >= 1, "--eval-batch-size must be >= 1"),
        (args.stage_seconds > 5, "--stage-seconds must be > 5"),
        (args.arm_timeout > 0, "--arm-timeout must be > 0"),
        (args.dataset_path.is_file(), f"--dataset-path {args.dataset_path} does not exist; give a GSM8K JSONL file"),
        (args.config is None or args.config.is_file(), f"--config {args.config} does not exist"),
    ]
    for name in ("questions_per_round", "num_generations", "max_completion_length", "eval_max_new_tokens"):
        value = getattr(args, name)
        checks.append((value is None or value >= (2 if name == "num_generations" else 1),
                       f"--{name.replace('_', '-')} must be >= {2 if name == 'num_generations' else 1}"))
    for ok, message in checks:
        if not ok:
            p.error(message)
    if args.cpus is not None:
        try:
            args.cpus = sorted({int(c) for c in args.cpus.split(",") if c.strip()})
        except ValueError:
            p.error(f"--cpus {args.cpus!r}: give CPU ids separated by commas, e.g. 0 or 0,1")
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if not args.cpus or not set(args.cpus) <= set(allowed):
            p.error(f"--cpus {args.cpus}: this process may run on CPUs {allowed}; pick from those")
    return args


def say(msg: str) -> None:
    print(f"[swarm-vs-solo] {msg}", flush=True)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


# ---------------------------------------------------------------------------------------
# Data: the held-out split, written as two JSONL files


@dataclass
class Split:
    train_file: Path
    held_out_file: Path
    train_qids: frozenset[str]
    held_out: list[Any]  # hivemind_exp.game.data.Problem


def _write_jsonl(path: Path, problems: Sequence[Any]) -> None:
    # `solution` keeps the dataset's own answer field ('... #### 72'), so the node parses it as usual.
    with path.open("w", encoding="utf-8") as fh:
        for prob in problems:
            fh.write(json.dumps({"question": prob.question, "answer": prob.solution or prob.answer}) + "\n")


def make_split(dataset: Path, held_out: int, seed: int, out_dir: Path) -> Split:
    from hivemind_exp.game.data import JsonlSource
    from hivemind_exp.game.evaluation import assert_disjoint, held_out_split

    problems = list(JsonlSource(dataset).problems())
    if held_out >= len(problems):
        raise BenchError(f"--held-out {held_out} leaves no training problems in {dataset} ({len(problems)} problems)")
    train, held = held_out_split(problems, held_out, seed=seed)
    train_file, held_file = out_dir / "train.jsonl", out_dir / "held_out.jsonl"
    _write_jsonl(train_file, train)
    _write_jsonl(held_file, held)
    # Read both back the way the node and the evaluation will, and check them on what was written.
    train_back, held_back = list(JsonlSource(train_file).problems()), list(JsonlSource(held_file).problems())
    if len(held_back) != len(held) or len(train_back) != len(train):
        raise BenchError(f"split files did not round-trip: {len(train_back)}/{len(train)} train, "
                         f"{len(held_back)}/{len(held)} held-out problems read back from {out_dir}")
    assert_disjoint(train_back, held_back)
    return Split(train_file, held_file, frozenset(p.qid for p in train_back), held_back)


def check_rounds_disjoint(split: Split, seed: int, rounds: Sequence[int], questions_per_round: int) -> int:
    """Recompute every played round's question set as the node does; raise if one is held out.

    Returns how many distinct questions the rounds used."""
    from hivemind_exp.game.data import JsonlSource, round_problems
    from hivemind_exp.game.evaluation import assert_disjoint

    source = JsonlSource(split.train_file)
    seen: dict[str, Any] = {}
    for r in rounds:
        for prob in round_problems(source, seed, r, questions_per_round):
            seen[prob.qid] = prob
    assert_disjoint(list(seen.values()), split.held_out)
    if not set(seen) <= split.train_qids:
        raise BenchError("a round question is not in the training file: the node's round selection changed")
    return len(seen)


# ---------------------------------------------------------------------------------------
# Profile


def write_profile(args: argparse.Namespace, device: str, out: Path) -> Any:
    """The stock (or --config) profile with the bench's overrides, written to `out`."""
    import yaml

    from hivemind_exp.trainer.profiles import Profile, choose_profile

    source, base = choose_profile(args.model, device, args.config)
    data = base.model_dump()
    data["model"] = args.model
    if args.questions_per_round:
        data["questions_per_round"] = args.questions_per_round
    grpo = data["grpo"]
    for name in ("num_generations", "max_completion_length", "learning_rate"):
        if getattr(args, name) is not None:
            grpo[name] = getattr(args, name)
    profile = Profile.model_validate(data)
    out.write_text(f"# swarm_vs_solo bench profile, from {source}\n" + yaml.safe_dump(profile.model_dump(), sort_keys=False))
    return profile


# ---------------------------------------------------------------------------------------
# One arm: `rl-swarm up` as a subprocess


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(n: int) -> int:
    """A port p with p..p+n-1 free on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n < 65536 and all(_port_free(p) for p in range(base, base + n)):
            return base
    raise BenchError(f"found no block of {n} free ports on 127.0.0.1")


@dataclass
class Step:
    peer: str
    round: int
    stage: int
    seconds: float
    reward: float


@dataclass
class ArmResult:
    name: str
    peers: int
    run_dir: Path
    logs_dir: Path
    wall_seconds: float
    steps: list[Step]
    checkpoint: Path
    total_steps: int  # node-state.json of peer0

    def node_steps(self, peer: str = NODE) -> list[Step]:
        return [s for s in self.steps if s.peer == peer]

    def rounds(self) -> list[int]:
        return sorted({s.round for s in self.steps})

    def last_round_reward(self, peer: str | None = NODE) -> tuple[float, dict[int, float]]:
        """Mean GRPO reward over the last round's stages (peer None: every peer), and per stage."""
        last = max(s.round for s in self.steps)
        picked = [s for s in self.steps if s.round == last and (peer is None or s.peer == peer)]
        by_stage: dict[int, list[float]] = {}
        for s in picked:
            by_stage.setdefault(s.stage, []).append(s.reward)
        return (sum(s.reward for s in picked) / len(picked),
                {k: sum(v) / len(v) for k, v in sorted(by_stage.items())})


def parse_steps(run_dir: Path, peers: int) -> list[Step]:
    """Every peer's GRPO steps, from its structured step events (`<data dir>/events.jsonl`)."""
    from hivemind_exp.common.events import read_events

    steps = []
    for i in range(peers):
        path = run_dir / f"peer{i}" / "events.jsonl"
        if path.is_file():
            steps += [Step(f"peer{i}", int(e["round"]), int(e["stage"]), float(e["seconds"]), float(e["mean_reward"]))
                      for e in read_events(path, kind="step")]
    return steps


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_arm(name: str, peers: int, args: argparse.Namespace, work: Path, split: Split, profile_file: Path,
            device: str, identity: Path | None) -> ArmResult:
    """Train one arm with `rl-swarm up` and wait until every trainer finished --rounds."""
    run_dir, logs_dir = work / name / "run", work / name / "logs"
    if identity is not None:
        # The same node in both arms: peer0 keeps its key (peer ID, pseudonym in prompts).
        (run_dir / NODE).mkdir(parents=True, exist_ok=True)
        shutil.copy2(identity, run_dir / NODE / "swarm.pem")
    for attempt in range(3):
        coord_port = free_port_block(peers + 2)
        cmd = [sys.executable, "-m", "hivemind_exp.cli", "up", "--num-peers", str(peers),
               "--model", args.model, "--device", device, "--config", str(profile_file),
               "--dataset", "jsonl", "--dataset-path", str(split.train_file), "--swarm-seed", str(args.seed),
               "--max-rounds", str(args.rounds), "--stage-seconds", str(args.stage_seconds),
               "--run-dir", str(run_dir), "--logs-dir", str(logs_dir), "--no-login", "--no-dashboard",
               "--coordinator-port", str(coord_port), "--peer-base-port", str(coord_port + 1),
               "--metrics-base-port", "0"]
        if args.chain:
            cmd += ["--chain", "--anvil-port", str(coord_port + peers + 1)]
        else:
            cmd += ["--no-chain"]
        say(f"{name}: training {peers} peer(s) for {args.rounds} round(s) ({3 * args.rounds} GRPO steps per node); "
            f"logs in {logs_dir}")
        code, seconds, output = _supervise(name, cmd, work, run_dir, logs_dir, peers, args)
        if code == 0:
            break
        if "ports in use" in output and attempt < 2:
            say(f"{name}: a port was taken meanwhile; retrying with other ports")
            continue
        raise BenchError(f"{name} arm: `rl-swarm up` exited with code {code} after {minutes(seconds)}.\n"
                         f"--- last lines of its output ---\n{_tail_text(output)}\n"
                         f"--- last lines of {logs_dir / (NODE + '.log')} ---\n{_tail(logs_dir / (NODE + '.log'))}")
    state_file = run_dir / NODE / "node-state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as err:
        raise BenchError(f"{name} arm finished but {state_file} is unreadable ({err})") from None
    if not state.get("checkpoint"):
        raise BenchError(f"{name} arm finished without a checkpoint in {state_file}")
    from hivemind_exp.trainer.grpo import GRPOEngine

    checkpoint = GRPOEngine.checkpoint_dir(run_dir / NODE / "checkpoints" / state["checkpoint"])
    steps = parse_steps(run_dir, peers)
    if not any(s.peer == NODE for s in steps):
        raise BenchError(f"{name} arm: no step event in {run_dir / NODE / 'events.jsonl'} (log: {logs_dir / (NODE + '.log')})")
    return ArmResult(name, peers, run_dir, logs_dir, seconds, steps, checkpoint, int(state.get("total_steps", 0)))


def _tail_text(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _supervise(name: str, cmd: list[str], work: Path, run_dir: Path, logs_dir: Path, peers: int,
               args: argparse.Namespace) -> tuple[int, float, str]:
    """Run `up`, show progress, enforce --arm-timeout; never leave its services running."""
    out_path = work / f"{name}-up.out"
    started = time.monotonic()
    with out_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # noqa: S603
                                cwd=str(work), start_new_session=True)
    expected = 3 * args.rounds
    last_note, last_done = 0.0, -1
    timed_out = interrupted = False
    try:
        while proc.poll() is None:
            time.sleep(2.0)
            elapsed = time.monotonic() - started
            done = len([s for s in parse_steps(run_dir, peers) if s.peer == NODE])
            if done != last_done or elapsed - last_note > 120:
                say(f"{name}: {NODE} {done}/{expected} GRPO steps done, {minutes(elapsed)} elapsed")
                last_note, last_done = elapsed, done
            if elapsed > args.arm_timeout:
                timed_out = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if proc.poll() is None:
            # `up` stops its services on SIGTERM (each runs in its own session, so signal it, not them).
            _stop_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _stop_group(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever `up` could not stop (it was killed): stop the services it named, by pid.
        output = out_path.read_text(errors="replace")
        for pid in {int(m[2]) for m in UP_STARTED.finditer(output)}:
            _stop_group(pid, signal.SIGKILL)
    seconds = time.monotonic() - started
    if interrupted:
        raise KeyboardInterrupt
    if timed_out:
        raise BenchError(f"{name} arm did not finish {args.rounds} round(s) within --arm-timeout {args.arm_timeout:.0f} s "
                         f"({last_done}/{expected} steps of {NODE}); raise --arm-timeout or lower the sizes.\n"
                         f"--- last lines of {logs_dir / (NODE + '.log')} ---\n{_tail(logs_dir / (NODE + '.log'))}")
    return proc.returncode, seconds, output


# ---------------------------------------------------------------------------------------
# Evaluation and statistics


@dataclass
class Evaluated:
    label: str
    source: str
    result: Any  # hivemind_exp.game.evaluation.EvalResult with records
    correct: list[bool] = field(default_factory=list)


def evaluate_model(label: str, source: str, held_out: Sequence[Any], device: str, args: argparse.Namespace,
                   max_new_tokens: int) -> Evaluated:
    import gc

    import torch

    from hivemind_exp.game.evaluation import evaluate
    from hivemind_exp.trainer.model_source import load_model_and_tokenizer

    dtype = "bfloat16" if device == "cuda" else "float32"
    say(f"evaluating {label} ({source}) on {len(held_out)} held-out problems, up to {max_new_tokens} new tokens")
    model, tokenizer = load_model_and_tokenizer(source, dtype=dtype, device=device, progress=False)
    try:
        result = evaluate(model, tokenizer, held_out, batch_size=args.eval_batch_size, max_new_tokens=max_new_tokens,
                          progress=True, keep_records=True)
    finally:
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    # Records come back in problem order; key them by question id to pair arms safely.
    by_qid = {r.qid: r.correct for r in result.records}
    correct = [by_qid[p.qid] for p in held_out]
    say(f"{label}: accuracy {result.accuracy:.3f} ({sum(correct)}/{result.n}), format {result.format_rate:.3f}, "
        f"{result.mean_completion_tokens:.0f} tokens/answer, {result.seconds:.0f} s")
    return Evaluated(label, source, result, correct)


@dataclass(frozen=True)
class PairedDiff:
    diff: float  # mean(a) - mean(b)
    low: float
    high: float
    level: float
    resamples: int
    a_only: int  # problems only a got right
    b_only: int
    p_not_positive: float  # share of resamples with diff <= 0 (one-sided bootstrap)

    def to_dict(self) -> dict[str, Any]:
        return {"diff": round(self.diff, 4), "ci_low": round(self.low, 4), "ci_high": round(self.high, 4),
                "ci_level": self.level, "resamples": self.resamples, "a_only_correct": self.a_only,
                "b_only_correct": self.b_only, "p_not_positive": round(self.p_not_positive, 4)}


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> PairedDiff:
    """Percentile interval of mean(a) - mean(b), resampling problems (pairs) with replacement."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired bootstrap needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(a)
    diffs = [int(x) - int(y) for x, y in zip(a, b)]
    rng = random.Random(seed)
    stats = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    low = stats[int(tail * (resamples - 1))]
    high = stats[int(round((1 - tail) * (resamples - 1)))]
    return PairedDiff(diff=sum(diffs) / n, low=low, high=high, level=level, resamples=resamples,
                      a_only=diffs.count(1), b_only=diffs.count(-1),
                      p_not_positive=sum(s <= 0 for s in stats) / resamples)


def weights_digest(checkpoint: Path) -> str:
    """Hash of a checkpoint's tensors (same digest = same weights), whatever the file layout."""
    from safetensors import safe_open

    h = hashlib.sha256()
    for path in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for key in sorted(fh.keys()):
                h.update(key.encode())
                h.update(fh.get_tensor(key).float().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--game", default="three-stage", choices=("three-stage", "sapo"))
    if pre.parse_known_args(argv)[0].game == "sapo":
        # The SAPO game's A/B runs in one process (bench/sapo_vs_solo.py: its own flags, --help lists them).
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from sapo_vs_solo import main as sapo_main

        return sapo_main(argv)
    args = parse_args(argv)
    started = time.monotonic()
    if args.cpus:
        # Inherited by `up` and every service it starts; the node sizes torch's threads from it.
        os.sched_setaffinity(0, args.cpus)
    load_start = os.getloadavg()
    from hivemind_exp.trainer.profiles import detect_device

    device = detect_device(args.device)
    if args.work_dir is not None:
        work = args.work_dir.resolve()
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            say(f"error: --work-dir {work} is not empty; give an empty or new directory")
            return 2
    else:
        work = Path(tempfile.mkdtemp(prefix="swarm-vs-solo-"))
    try:
        return _run(args, device, work, started, load_start)
    except BenchError as err:
        say(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; every service this bench started was stopped")
        return 130
    finally:
        if args.work_dir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            # stderr: stdout's last line stays the JSON report.
            print(f"[swarm-vs-solo] work dir kept: {work}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, device: str, work: Path, started: float, load_start: tuple[float, ...]) -> int:
    pinned = f", pinned to CPU(s) {','.join(map(str, args.cpus))}" if args.cpus else ""
    say(f"work dir {work}; device {device}; {os.cpu_count()} CPU(s){pinned}, load average {load_start[0]:.1f}")
    split = make_split(args.dataset_path, args.held_out, args.seed, work)
    say(f"split {args.dataset_path}: {len(split.train_qids)} training problems -> {split.train_file}, "
        f"{len(split.held_out)} held-out -> {split.held_out_file} (disjoint by question hash)")
    profile_file = work / "bench-profile.yaml"
    profile = write_profile(args, device, profile_file)
    g = profile.grpo
    say(f"profile {profile_file}: {profile.questions_per_round} question(s)/round x {g.num_generations} completions, "
        f"<= {g.max_completion_length} tokens, lr {g.learning_rate}, {profile.dtype}")
    eval_tokens = args.eval_max_new_tokens or g.max_completion_length

    t = time.monotonic()
    base = evaluate_model("start", args.model, split.held_out, device, args, eval_tokens)
    base_seconds = time.monotonic() - t

    solo = run_arm("solo", 1, args, work, split, profile_file, device, identity=None)
    swarm = run_arm("swarm", args.peers, args, work, split, profile_file, device,
                    identity=solo.run_dir / NODE / "swarm.pem")
    distinct = {}
    for arm in (solo, swarm):
        distinct[arm.name] = check_rounds_disjoint(split, args.seed, arm.rounds(), profile.questions_per_round)
    say(f"held-out set is disjoint from every round's questions (solo {distinct['solo']}, "
        f"swarm {distinct['swarm']} distinct training questions)")

    t = time.monotonic()
    solo_eval = evaluate_model("solo", str(solo.checkpoint), split.held_out, device, args, eval_tokens)
    swarm_eval = evaluate_model("swarm", str(swarm.checkpoint), split.held_out, device, args, eval_tokens)
    eval_seconds = time.monotonic() - t + base_seconds

    diff = paired_bootstrap(swarm_eval.correct, solo_eval.correct, args.bootstrap, args.seed)
    solo_vs_start = paired_bootstrap(solo_eval.correct, base.correct, args.bootstrap, args.seed + 1)
    swarm_vs_start = paired_bootstrap(swarm_eval.correct, base.correct, args.bootstrap, args.seed + 2)

    # Diagnostics: did the arms train the same amount, and did the swarm's peers differ at all?
    steps = {arm.name: len(arm.node_steps()) for arm in (solo, swarm)}
    steps_equal = steps["solo"] == steps["swarm"] == 3 * args.rounds
    digests = {f"swarm/peer{i}": weights_digest(_peer_checkpoint(swarm.run_dir, i)) for i in range(args.peers)
               if _peer_checkpoint(swarm.run_dir, i) is not None}
    digests["solo/peer0"] = weights_digest(solo.checkpoint)
    swarm_peers_identical = len({v for k, v in digests.items() if k.startswith("swarm/")}) == 1 and len(digests) > 2
    solo_reward, solo_by_stage = solo.last_round_reward()
    swarm_reward, swarm_by_stage = swarm.last_round_reward()
    swarm_all_reward, _ = swarm.last_round_reward(peer=None)
    total = time.monotonic() - started

    print()
    print(f"swarm vs solo: {args.model} on {device}, seed {args.seed}, {args.rounds} round(s) = {3 * args.rounds} "
          f"GRPO steps per node, swarm of {args.peers}, {len(split.held_out)} held-out GSM8K problems")
    print(f"  start model accuracy   {base.result.accuracy:.3f}  (format {base.result.format_rate:.3f})")
    print(f"  solo  accuracy         {solo_eval.result.accuracy:.3f}  (format {solo_eval.result.format_rate:.3f}); "
          f"vs start {solo_vs_start.diff:+.3f} [{solo_vs_start.low:+.3f}, {solo_vs_start.high:+.3f}]")
    print(f"  swarm accuracy         {swarm_eval.result.accuracy:.3f}  (format {swarm_eval.result.format_rate:.3f}); "
          f"vs start {swarm_vs_start.diff:+.3f} [{swarm_vs_start.low:+.3f}, {swarm_vs_start.high:+.3f}]")
    print(f"  swarm - solo           {diff.diff:+.3f}  95% CI [{diff.low:+.3f}, {diff.high:+.3f}] (paired bootstrap, "
          f"{diff.resamples} resamples; {diff.a_only} problems only swarm solved, {diff.b_only} only solo)")
    print(f"  mean reward last round solo {solo_reward:.3f} {_stages(solo_by_stage)}; swarm node {swarm_reward:.3f} "
          f"{_stages(swarm_by_stage)}; all swarm peers {swarm_all_reward:.3f}")
    print(f"  GRPO steps of the node solo {steps['solo']}, swarm {steps['swarm']}"
          + ("" if steps_equal else f"  WARNING: expected {3 * args.rounds} each; the comparison is unequal"))
    if swarm_peers_identical:
        print("  WARNING: every swarm peer ended with identical weights: the peers sampled the same completions "
              "(same model, same seed), so the swarm added no diversity")
    print(f"  wall time: solo {minutes(solo.wall_seconds)}, swarm {minutes(swarm.wall_seconds)}, "
          f"evaluation {minutes(eval_seconds)}, total {minutes(total)} (load average {load_start[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end)")

    report = {
        "bench": "swarm_vs_solo",
        "model": args.model, "device": device, "seed": args.seed, "rounds": args.rounds, "peers": args.peers,
        "grpo_steps_per_node": steps, "steps_equal": steps_equal,
        "profile": {"questions_per_round": profile.questions_per_round, **profile.grpo.model_dump(),
                    "dtype": profile.dtype},
        "held_out": len(split.held_out), "train_pool": len(split.train_qids),
        "train_questions": distinct, "held_out_disjoint": True,
        "eval_max_new_tokens": eval_tokens,
        "accuracy": {"start": base.result.accuracy, "solo": solo_eval.result.accuracy,
                     "swarm": swarm_eval.result.accuracy},
        "format_rate": {"start": base.result.format_rate, "solo": solo_eval.result.format_rate,
                        "swarm": swarm_eval.result.format_rate},
        "mean_completion_tokens": {"start": round(base.result.mean_completion_tokens, 1),
                                   "solo": round(solo_eval.result.mean_completion_tokens, 1),
                                   "swarm": round(swarm_eval.result.mean_completion_tokens, 1)},
        "swarm_minus_solo": diff.to_dict(),
        "solo_minus_start": solo_vs_start.to_dict(),
        "swarm_minus_start": swarm_vs_start.to_dict(),
        "last_round_mean_reward": {"solo": round(solo_reward, 4), "swarm": round(swarm_reward, 4),
                                   "swarm_all_peers": round(swarm_all_reward, 4),
                                   "solo_by_stage": _round_map(solo_by_stage),
                                   "swarm_by_stage": _round_map(swarm_by_stage)},
        "weights_digest": digests, "swarm_peers_identical": swarm_peers_identical,
        "wall_seconds": {"solo": round(solo.wall_seconds, 1), "swarm": round(swarm.wall_seconds, 1),
                         "eval": round(eval_seconds, 1), "total": round(total, 1)},
        "loadavg": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)},
        "cpus": os.cpu_count(), "pinned_cpus": args.cpus,
    }
    print(json.dumps(report))
    return 0


def _peer_checkpoint(run_dir: Path, i: int) -> Path | None:
    try:
        name = json.loads((run_dir / f"peer{i}" / "node-state.json").read_text()).get("checkpoint")
    except (OSError, ValueError):
        return None
    return run_dir / f"peer{i}" / "checkpoints" / name if name else None


def _stages(by_stage: dict[int, float]) -> str:
    return "(" + ", ".join(f"stage {k} {v:.3f}" for k, v in by_stage.items()) + ")"


def _round_map(by_stage: dict[int, float]) -> dict[str, float]:
    return {str(k): round(v, 4) for k, v in by_stage.items()}


if __name__ == "__main__":
    sys.exit(main())
