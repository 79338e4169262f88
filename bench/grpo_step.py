"""GRPO step throughput: hivemind_exp.trainer.GRPOEngine against stock TRL GRPOTrainer, same model and prompts.

    .venv/bin/python bench/grpo_step.py [--steps 3] [--trl-steps 1] [--max-completion-length 128]

Both sides train SmolLM2-135M-Instruct (fp32, CPU) on chat-formatted GSM8K questions from
/work/shared/datasets/gsm8k/train.jsonl with the same reward. TRL runs with the anchor's CPU
settings: gradient checkpointing on, per_device_train_batch_size=2, num_generations=2,
gradient_accumulation_steps=4, use_cpu, so one optimizer step = 4 prompts x 2 completions.
Ours runs the same group shape (4 prompts x 2 completions per step) after a warm-up step.

Each side runs in its own subprocess so its peak RSS is its own. The metric is completion
tokens trained per second: (completion tokens of the step, EOS included) / (step wall time,
generation + scoring + update). The reward has a small length term so groups never tie: a
tied group has zero advantage and our engine would skip it, which would flatter us.
Stock TRL takes minutes per step here, so by default it runs a single optimizer step.

Prints a summary, then as the LAST line a JSON object:
{"ours_tok_s", "trl_tok_s", "ratio", "peak_rss_mb", "trl_peak_rss_mb", "matmul_fraction", ...}
`matmul_fraction` = our estimated FLOP rate / this machine's measured fp32 torch.mm rate,
with FLOPs ~ 6 * params * trained tokens + 2 * params * generated tokens (prompt tokens are not
counted, so it is an underestimate).
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
PROMPTS_PER_STEP = 4  # TRL: per_device_train_batch_size 2 x gradient_accumulation_steps 4 / num_generations 2
NUM_GENERATIONS = 2
RESULT_PREFIX = "RESULT "


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


# ---------------------------------------------------------------------------- workers


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from hivemind_exp.trainer.model_source import load_model_and_tokenizer
    from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams

    questions = load_questions(args.dataset, PROMPTS_PER_STEP * (args.steps + args.warmup))
    model, tokenizer = load_model_and_tokenizer(args.model, progress=False)
    n_params = sum(p.numel() for p in model.parameters())
    budget = {} if args.activation_memory_mb is None else {"activation_memory_mb": args.activation_memory_mb}
    params = GRPOParams(num_generations=NUM_GENERATIONS, max_completion_length=args.max_completion_length,
                        max_prompt_length=512, learning_rate=5e-6, temperature=1.0, beta=0.0,
                        micro_batch_size=args.micro_batch_size, generation_batch_size=32,
                        num_threads=0 if args.auto_threads else args.threads, seed=0, **budget)
    engine = GRPOEngine(model, tokenizer, params)
    log(f"ours: {n_params / 1e6:.1f}M parameters, up to {engine.num_threads} threads, micro_batch_size "
        f"{params.micro_batch_size}, activation_memory_mb {params.activation_memory_mb}")

    def batch(k: int) -> list[dict[str, str]]:
        return questions[k * PROMPTS_PER_STEP:(k + 1) * PROMPTS_PER_STEP]

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
        steps.append({"tokens": r.completion_tokens, "trained_tokens": trained, "seconds": wall,
                      "gen_seconds": r.gen_seconds, "train_seconds": r.train_seconds,
                      "skipped_groups": r.skipped_groups, "mean_reward": r.mean_reward, "loss": r.loss})
        log(f"ours step {k + 1}/{args.steps}: {r.completion_tokens} tokens, generate {r.gen_seconds:.1f}s, "
            f"train {r.train_seconds:.1f}s, {r.completion_tokens / wall:.1f} tok/s, skipped groups {r.skipped_groups}")
    tokens = sum(s["tokens"] for s in steps)
    seconds = sum(s["seconds"] for s in steps)
    flops = sum(6 * n_params * s["trained_tokens"] + 2 * n_params * s["tokens"] for s in steps)
    chosen = {kind: tuner.best() for kind, tuner in engine.tuners.items()}
    if chosen:
        log(f"ours: thread counts the tuner settled on: {chosen}")
    return {"tok_s": tokens / seconds, "tokens": tokens, "seconds": seconds, "steps": steps,
            "flops_per_s": flops / seconds, "params": n_params, "peak_rss_mb": peak_rss_mb(),
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
    questions = load_questions(args.dataset, PROMPTS_PER_STEP * args.trl_steps)
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
            output_dir=out, use_cpu=True, gradient_checkpointing=True, per_device_train_batch_size=2,
            num_generations=NUM_GENERATIONS, gradient_accumulation_steps=4,
            max_completion_length=args.max_completion_length, max_steps=args.trl_steps, learning_rate=5e-6,
            temperature=1.0, beta=0.0, logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, seed=0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=trl_reward, args=config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[Timer()])
        log(f"trl: {torch.get_num_threads()} threads, {args.trl_steps} optimizer step(s) of "
            f"{PROMPTS_PER_STEP} prompts x {NUM_GENERATIONS} completions")
        trainer.train()
    tokens = sum(step_tokens)
    seconds = sum(timings)
    return {"tok_s": tokens / seconds, "tokens": tokens, "seconds": seconds, "step_seconds": timings,
            "peak_rss_mb": peak_rss_mb(), "threads": threads}


# ---------------------------------------------------------------------------- driver


def run_worker(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one side in a fresh interpreter; its stderr streams through, its result comes back as JSON."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--steps", str(args.steps),
           "--trl-steps", str(args.trl_steps), "--warmup", str(args.warmup), "--model", args.model,
           "--max-completion-length", str(args.max_completion_length), "--threads", str(args.threads),
           "--micro-batch-size", str(args.micro_batch_size), "--dataset", str(args.dataset)]
    if args.auto_threads:
        cmd.append("--auto-threads")
    if args.activation_memory_mb is not None:
        cmd += ["--activation-memory-mb", str(args.activation_memory_mb)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
        elif line.strip():
            print(f"  [{kind}] {line}", file=sys.stderr)  # e.g. the Trainer's own log lines
    if proc.returncode != 0 or result is None:
        raise SystemExit(f"{kind} benchmark worker failed (exit {proc.returncode}); its errors are above")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="measured GRPOEngine steps (after --warmup) [3]")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured GRPOEngine steps first [1]")
    parser.add_argument("--trl-steps", type=int, default=1,
                        help="measured TRL optimizer steps; each takes minutes on 2 CPU cores [1]")
    parser.add_argument("--model", default="embedded", help="model for both sides [embedded = SmolLM2-135M-Instruct]")
    parser.add_argument("--max-completion-length", type=int, default=128, help="new tokens per completion [128]")
    parser.add_argument("--micro-batch-size", type=int, default=8, help="GRPOEngine sequences per forward/backward [8]")
    parser.add_argument("--activation-memory-mb", type=int, default=None,
                        help="GRPOEngine activation budget per micro-batch [GRPOParams default]")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both sides; 0 = available CPUs [0]")
    parser.add_argument("--auto-threads", action="store_true",
                        help="let GRPOEngine's ThreadTuner pick 1 or all threads (for a machine other jobs share); "
                             "by default both sides run the same fixed count")
    parser.add_argument("--dataset", type=Path, default=GSM8K, help=f"GSM8K JSONL [{GSM8K}]")
    parser.add_argument("--skip-trl", action="store_true", help="only run our engine (no ratio)")
    parser.add_argument("--worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "trl_steps", "max_completion_length", "micro_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.threads < 0:
        parser.error("--warmup and --threads must be >= 0")

    if args.worker:
        result = run_ours(args) if args.worker == "ours" else run_trl(args)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    from hivemind_exp.trainer.threads import configure_torch_threads

    threads = configure_torch_threads(args.threads)
    args.threads = threads  # both workers get the same explicit count
    load_before = os.getloadavg()
    rate = matmul_gflops(threads)
    log(f"fp32 torch.mm: {rate:.1f} GFLOP/s with {threads} threads; load average {load_before[0]:.2f}")
    ours = run_worker("ours", args)
    trl = None if args.skip_trl else run_worker("trl", args)
    load_after = os.getloadavg()
    fraction = ours["flops_per_s"] / (rate * 1e9)
    print(f"ours: {ours['tok_s']:.2f} completion tok/s over {args.steps} step(s) ({ours['tokens']} tokens, "
          f"{ours['seconds']:.1f}s), peak RSS {ours['peak_rss_mb']:.0f} MB, "
          f"{ours['flops_per_s'] / 1e9:.1f} GFLOP/s = {fraction:.1%} of torch.mm")
    if trl is not None:
        print(f"trl:  {trl['tok_s']:.2f} completion tok/s over {args.trl_steps} step(s) ({trl['tokens']} tokens, "
              f"{trl['seconds']:.1f}s), peak RSS {trl['peak_rss_mb']:.0f} MB")
        print(f"ratio: {ours['tok_s'] / trl['tok_s']:.1f}x")
    print(f"load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f} on {os.cpu_count()} CPUs")
    summary = {
        "ours_tok_s": round(ours["tok_s"], 3),
        "trl_tok_s": round(trl["tok_s"], 3) if trl else None,
        "ratio": round(ours["tok_s"] / trl["tok_s"], 2) if trl else None,
        "peak_rss_mb": round(ours["peak_rss_mb"]),
        "trl_peak_rss_mb": round(trl["peak_rss_mb"]) if trl else None,
        "matmul_fraction": round(fraction, 3),
        "matmul_gflops": round(rate, 1),
        "ours_steps": args.steps,
        "trl_steps": 0 if trl is None else args.trl_steps,
        "max_completion_length": args.max_completion_length,
        "threads": threads,
        "load_avg_1m": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
