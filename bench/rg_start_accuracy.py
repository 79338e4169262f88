"""Starting accuracy of the embedded model on ReasoningGym candidates: which tasks can GRPO learn?

GRPO learns only from groups where some completions are right and some wrong. For every
candidate task/difficulty this decodes the model on `--items` held-out items with the SAPO
prompt (hivemind_exp/sapo/rubric.py), once greedily and `--samples` times at
`--temperature`, and prints per candidate:

  greedy    share of items whose greedy reply is right (tagged <answer>, or the untagged
            fallback of the SAPO reward: last line / last number)
  tagged    share of greedy replies right inside <answer> tags
  sampled   share of sampled replies that are right
  any       share of items with at least one right sample
  signal    share of items whose samples are neither all right nor all wrong (the groups
            that give GRPO a gradient)

Candidates run one after another (2 shared cores). The LAST line is one JSON object.

    .venv/bin/python bench/rg_start_accuracy.py                         # every candidate
    .venv/bin/python bench/rg_start_accuracy.py --only chain_sum_2x1 gcd_20
    .venv/bin/python bench/rg_start_accuracy.py --list
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

# label -> (reasoning-gym task, config). Small values: a 135M model must get some right.
CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "chain_sum_2x1": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    "chain_sum_2x2": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}),
    "chain_sum_3x1": ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}),
    "basic_arithmetic_2x1": ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
                                                  "operators": ["+", "-"], "allow_parentheses": False,
                                                  "allow_negation": False}),
    "base_conversion_small": ("base_conversion", {"min_base": 2, "max_base": 10, "min_value": 0, "max_value": 31}),
    "count_bits_15": ("count_bits", {"min_n": 1, "max_n": 15}),
    "count_bits_255": ("count_bits", {"min_n": 1, "max_n": 255}),
    "gcd_20": ("gcd", {"min_value": 1, "max_value": 20}),
    "letter_counting_short": ("letter_counting", {"min_words": 1, "max_words": 3}),
    "family_relationships": ("family_relationships", {}),
    "products_2x1": ("products", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    "lcm_small": ("lcm", {"min_value": 1, "max_value": 10}),
    "spell_backward_short": ("spell_backward", {"min_word_len": 3, "max_word_len": 4}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="LABEL", help="candidates to measure (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="print the candidates and exit")
    p.add_argument("--model", default="embedded", help="model to decode (default: the embedded SmolLM2-135M)")
    p.add_argument("--items", type=int, default=48, help="held-out items per candidate")
    p.add_argument("--samples", type=int, default=4, help="sampled replies per item (0: greedy only)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per decode batch")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the sampled replies")
    args = p.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(CANDIDATES))
    if unknown:
        p.error(f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    if args.items < 1 or args.samples < 0 or args.max_new_tokens < 1:
        p.error("--items and --max-new-tokens must be >= 1, --samples >= 0")
    return args


def say(msg: str) -> None:
    print(f"[rg-start] {msg}", file=sys.stderr, flush=True)


def measure(label: str, engine: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from hivemind_exp.game.parser import stage_parser
    from hivemind_exp.sapo.rubric import sapo_prompt, sapo_rubric
    from hivemind_exp.sapo.tasks import ReasoningGymSource, TaskMix

    task, config = CANDIDATES[label]
    # held_out_reserve 0: the measured items are the held-out ones; no draw() happens here.
    source = ReasoningGymSource(TaskMix.from_mapping({"tasks": [{"name": task, "weight": 1, "config": config}],
                                                      "held_out_reserve": 0}))
    problems = source.held_out(args.items)
    rubric = sapo_rubric()
    parser = stage_parser(1)
    prompts = [sapo_prompt(p) for p in problems]

    def right(text: str, problem: Any) -> tuple[bool, bool]:
        detail = rubric.score_detailed([text], problem, source).per_function
        tagged = detail["correctness_reward"][0] == 1.0
        return tagged or detail["untagged_correctness_reward"][0] == 1.0, tagged

    started = time.perf_counter()
    greedy = [g[0] for g in engine.generate(prompts, 1, greedy=True)]
    greedy_s = time.perf_counter() - started
    g_right = [right(t, p) for t, p in zip(greedy, problems, strict=True)]
    tags = sum(parser.parse(t).get("answer") is not None for t in greedy)
    row: dict[str, Any] = {
        "label": label, "task": task, "config": config, "items": len(problems),
        "greedy_correct": sum(r for r, _ in g_right), "greedy_tagged_correct": sum(t for _, t in g_right),
        "greedy_with_answer_tag": tags, "greedy_seconds": round(greedy_s, 1),
        "example": {"question": problems[0].question[-160:], "answer": problems[0].answer, "reply": greedy[0][:200]},
    }
    if args.samples:
        torch.manual_seed(args.seed)
        started = time.perf_counter()
        groups = engine.generate(prompts, args.samples, greedy=False)
        row["sampled_seconds"] = round(time.perf_counter() - started, 1)
        per_item = [[right(t, p)[0] for t in group] for group, p in zip(groups, problems, strict=True)]
        row["sampled_correct"] = sum(sum(g) for g in per_item)
        row["sampled_total"] = len(per_item) * args.samples
        row["items_any_correct"] = sum(any(g) for g in per_item)
        row["items_with_signal"] = sum(any(g) and not all(g) for g in per_item)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for label, (task, config) in CANDIDATES.items():
            print(f"{label:24s} {task} {json.dumps(config)}")
        return 0
    import torch

    from hivemind_exp.trainer.model_source import load_model_and_tokenizer
    from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams

    labels = args.only or list(CANDIDATES)
    say(f"loading {args.model} on {args.device}")
    model, tokenizer = load_model_and_tokenizer(args.model, dtype="float32", device=args.device, progress=False)
    model.eval()
    params = GRPOParams(max_completion_length=args.max_new_tokens, generation_batch_size=args.batch_size,
                        temperature=args.temperature, max_prompt_length=1024, num_threads=args.threads,
                        seed=args.seed)
    engine = GRPOEngine(model, tokenizer, params, device=args.device, progress=False)
    rows = []
    total = time.perf_counter()
    with torch.inference_mode():
        for label in labels:
            say(f"{label}: {args.items} items, greedy + {args.samples} samples at T={args.temperature}")
            row = measure(label, engine, args)
            rows.append(row)
            say(json.dumps(row))
    n = args.items
    print(f"{'candidate':24s} {'greedy':>8s} {'tagged':>8s} {'sampled':>9s} {'any':>7s} {'signal':>7s}")
    for r in rows:
        line = f"{r['label']:24s} {r['greedy_correct']:3d}/{n:<4d} {r['greedy_tagged_correct']:3d}/{n:<4d}"
        if "sampled_correct" in r:
            line += (f" {r['sampled_correct']:3d}/{r['sampled_total']:<5d} {r['items_any_correct']:3d}/{n:<3d}"
                     f" {r['items_with_signal']:3d}/{n:<3d}")
        print(line)
    print(json.dumps({"model": args.model, "items": n, "samples": args.samples, "temperature": args.temperature,
                      "max_new_tokens": args.max_new_tokens, "seconds": round(time.perf_counter() - total, 1),
                      "rows": [{k: v for k, v in r.items() if k != "example"} for r in rows]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
