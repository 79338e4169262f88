"""`Sampler` on its own (what evaluation uses): the engine's generation without the engine."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams
from hivemind_exp.trainer.sampling import Sampler
from tests.fixtures.tiny_model import make_tiny_model

PROMPTS = [[{"role": "user", "content": "What is 2 + 2?"}], "a plain text prompt, used as it is", "short"]


def test_a_sampler_generates_what_the_engine_generates() -> None:
    model, tok = make_tiny_model(seed=0, tie_word_embeddings=False)
    params = GRPOParams(num_generations=3, max_completion_length=9, generation_batch_size=4, seed=5)
    engine = GRPOEngine(model, tok, params)
    sampler = Sampler(model, tok, GRPOParams(num_generations=3, max_completion_length=9, generation_batch_size=4,
                                             seed=5))
    assert sampler.device == torch.device("cpu") and engine.sampler.params is engine.params
    ids = sampler.encode_prompts(PROMPTS)
    assert ids == engine.encode_prompts(PROMPTS)
    assert sampler.generate_token_ids(ids, greedy=True) == engine.generate_token_ids(ids, greedy=True)
    assert sampler.generate_token_ids(ids) == engine.generate_token_ids(ids)  # same seed, same draws
    short = sampler.generate_token_ids(ids, 1, greedy=True, max_new_tokens=2)
    assert all(len(group[0]) <= 2 for group in short)
    assert sampler.params.max_completion_length == 9  # a shorter limit per call leaves the params alone
    assert all(p.grad is None for p in model.parameters())


def test_evaluate_tasks_takes_a_sampler_or_an_engine() -> None:
    from hivemind_exp.game.rewards import format_reward
    from hivemind_exp.sapo.evaluation import evaluate_tasks
    from hivemind_exp.sapo.rubric import correctness_reward, untagged_correctness_reward

    model, tok = make_tiny_model(seed=0, tie_word_embeddings=False)
    seen: list[str] = []

    class Rubric:
        def score_detailed(self, completions: list[str], problem: Any, source: Any) -> Any:
            seen.extend(completions)
            ok = [float(problem.spec.task == "even") for _ in completions]
            names = (correctness_reward.__name__, untagged_correctness_reward.__name__, format_reward.__name__)
            return SimpleNamespace(per_function={name: ok for name in names})

    problems = [SimpleNamespace(text=f"question {i}", spec=SimpleNamespace(task="even" if i % 2 == 0 else "odd"))
                for i in range(5)]
    engine = GRPOEngine(model, tok, GRPOParams(max_completion_length=16))
    by_engine = evaluate_tasks(engine, problems, None, Rubric(), lambda p: p.text, max_new_tokens=6)
    texts, seen[:] = list(seen), []
    by_sampler = evaluate_tasks(Sampler(model, tok, GRPOParams(max_completion_length=16)), problems, None, Rubric(),
                                lambda p: p.text, max_new_tokens=6)
    assert seen == texts and engine.params.max_completion_length == 16
    assert by_engine.solved == by_sampler.solved == [True, False, True, False, True]
    assert by_engine.per_task == by_sampler.per_task == {"even": 1.0, "odd": 0.0}
