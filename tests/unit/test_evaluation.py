"""`evaluate` on the tiny random model: counts, rates, batching, and the model left as it was."""

from __future__ import annotations

import pytest
import torch

from hivemind_exp.game.data import GeneratedSource
from hivemind_exp.game.evaluation import EvalResult, evaluate
from tests.fixtures.tiny_model import make_tiny_model

PROBLEMS = list(GeneratedSource(seed=5, size=5).problems())


def test_counts_rates_and_lengths(tiny_model):
    model, tokenizer = tiny_model
    res = evaluate(model, tokenizer, PROBLEMS, batch_size=2, max_new_tokens=6, keep_records=True)
    assert isinstance(res, EvalResult) and res.n == 5 and len(res.records) == 5
    assert 0.0 <= res.accuracy <= 1.0 and 0.0 <= res.format_rate <= 1.0
    assert 1.0 <= res.mean_completion_tokens <= 6.0
    assert [r.qid for r in res.records] == [p.qid for p in PROBLEMS]  # input order, despite length sorting
    for r, p in zip(res.records, PROBLEMS):
        assert 1 <= r.completion_tokens <= 6
        assert r.completion_tokens == 6 or not r.truncated  # ended early = reached EOS
        assert (r.question, r.reference) == (p.question, p.answer)
    assert evaluate(model, tokenizer, PROBLEMS[:2], max_new_tokens=2).records == ()


def test_batched_decoding_matches_one_at_a_time():
    # Untied embeddings: the tied tiny model greedily repeats one token, which would make
    # "the same completions" true for any batching, right or wrong.
    model, tokenizer = make_tiny_model(seed=0, tie_word_embeddings=False)
    one = evaluate(model, tokenizer, PROBLEMS, batch_size=1, max_new_tokens=8, keep_records=True)
    many = evaluate(model, tokenizer, PROBLEMS, batch_size=5, max_new_tokens=8, keep_records=True)
    assert len({r.completion for r in one.records}) > 1, "completions should differ between problems"
    assert [r.completion for r in many.records] == [r.completion for r in one.records]
    assert [r.completion_tokens for r in many.records] == [r.completion_tokens for r in one.records]


def test_model_modes_restored_and_no_autograd(tiny_model):
    model, tokenizer = tiny_model
    model.train()
    model.model.layers[0].eval()  # a sub-module deliberately in eval mode must stay so
    seen: list[tuple[bool, bool]] = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda mod, args, out: seen.append((torch.is_inference_mode_enabled(), mod.training)))
    try:
        evaluate(model, tokenizer, PROBLEMS[:2], batch_size=2, max_new_tokens=3)
    finally:
        hook.remove()
    assert seen and all(inference and not training for inference, training in seen)
    assert model.training and not model.model.layers[0].training and model.model.layers[1].training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())

    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        evaluate(model, tokenizer, PROBLEMS[:1], max_new_tokens=2)
        assert torch.get_num_threads() == 1  # the caller's thread count is left alone
    finally:
        torch.set_num_threads(threads)
    assert not any(m.training for m in model.modules())


def test_empty_and_bad_arguments(tiny_model):
    model, tokenizer = tiny_model
    assert evaluate(model, tokenizer, []).n == 0
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, tokenizer, PROBLEMS, batch_size=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        evaluate(model, tokenizer, PROBLEMS, max_new_tokens=0)
