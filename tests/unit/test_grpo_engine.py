"""GRPOEngine on a tiny random Llama with the real SmolLM2 tokenizer: generation, the update, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from hivemind_exp.trainer.grpo import (
    HEAD_CHUNK_ROWS,
    GRPOEngine,
    GRPOParams,
    GRPOParamsError,
    RewardError,
    _attach_flat_grads,
    _backward_prompt_pass,
    _MicroBatch,
    _token_logprob_function,
    group_advantages,
)
from tests.fixtures.tiny_model import make_tiny_model

CHAT = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and then half as many in May."}],
    "a plain text prompt, used as it is",
]
LETTER = "A"


def _eos_prone(eos_weight: float = 14.0) -> tuple[Any, Any, int]:
    """A tiny model whose output depends on one hidden unit: high -> EOS likely, low -> token 'A' likely.

    Untied embeddings so the surgery on the LM head does not change the inputs. Returns
    (model, tokenizer, id of 'A').
    """
    model, tok = make_tiny_model(seed=1, tie_word_embeddings=False)
    letter = tok.convert_tokens_to_ids(LETTER)
    with torch.no_grad():
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        head = model.lm_head.weight
        head[:, 0] = 0.0
        head[tok.eos_token_id, 0] = eos_weight
        head[letter, 0] = -eos_weight
    return model, tok, letter


def _sharpened(model: Any, factor: float = 40.0) -> Any:
    """Spread the logits so greedy decoding has no near-ties that float rounding could flip."""
    with torch.no_grad():
        model.lm_head.weight.mul_(factor)
    return model


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _length_reward(_: int, completions: list[str]) -> list[float]:
    return [float(len(c)) for c in completions]


# ---------------------------------------------------------------------------- parameters


def test_params_reject_bad_values_with_the_field_name() -> None:
    with pytest.raises(GRPOParamsError, match="num_generations=1"):
        GRPOParams(num_generations=1)
    with pytest.raises(GRPOParamsError, match="top_p=1.5"):
        GRPOParams(top_p=1.5)
    with pytest.raises(GRPOParamsError, match="loss_type='bogus'.*dapo"):
        GRPOParams(loss_type="bogus")
    with pytest.raises(GRPOParamsError, match="micro_batch_size='8'.*whole number"):
        GRPOParams(micro_batch_size="8")  # type: ignore[arg-type]
    with pytest.raises(GRPOParamsError, match="unknown key.*num_generation\\b.*known keys"):
        GRPOParams.from_mapping({"num_generation": 4})
    assert GRPOParams.from_mapping({"num_generations": 6, "beta": 0.04}).num_generations == 6


def test_group_advantages_match_trl() -> None:
    from trl.trainer.utils import nanstd

    rewards = [[1.0, 0.0, 0.5, 2.0], [3.0, 3.0, 3.0, 3.0], [0.1, 0.1, 0.1, 0.1], [-1.0, 4.0, 0.0, 0.0]]
    r = torch.tensor(rewards, dtype=torch.float64)
    expected = (r - r.mean(1, keepdim=True)) / (nanstd(r, dim=1).unsqueeze(1) + 1e-4)
    got = torch.tensor(group_advantages(rewards), dtype=torch.float64)
    assert torch.allclose(got, expected, atol=1e-9)
    assert got[1].eq(0).all() and got[2].eq(0).all()  # equal rewards: exactly zero, no rounding residue


# ---------------------------------------------------------------------------- generation


def test_generate_gives_num_generations_per_prompt_within_the_limit() -> None:
    model, tok = make_tiny_model()
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=3, max_completion_length=7, generation_batch_size=4))
    texts = engine.generate(CHAT)
    assert [len(g) for g in texts] == [3, 3, 3]
    assert all(isinstance(t, str) for g in texts for t in g)
    ids = engine.generate_token_ids(engine.encode_prompts(CHAT), num_generations=5)
    assert [len(g) for g in ids] == [5, 5, 5]
    for group in ids:
        for c in group:
            assert 1 <= len(c) <= 7
            if tok.eos_token_id not in c:
                assert len(c) == 7  # only EOS ends a completion early


def test_generation_stops_at_eos_and_drops_finished_rows() -> None:
    model, tok, _ = _eos_prone()
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=8, max_completion_length=12, generation_batch_size=24))
    ids = engine.generate_token_ids(engine.encode_prompts(CHAT))
    eos = tok.eos_token_id
    flat = [c for g in ids for c in g]
    for c in flat:
        assert eos not in c[:-1], "nothing may follow the first EOS"
        assert len(c) <= 12
    stopped = [c for c in flat if c[-1] == eos]
    assert stopped and any(len(c) < 12 for c in stopped), "some completions must end early at EOS"
    assert len({len(c) for c in flat}) > 2, "rows finish at different steps (the batch shrinks as they do)"
    texts = engine.generate(CHAT)
    assert all("<|im_end|>" not in t for g in texts for t in g)  # special tokens removed from text


def test_greedy_decoding_matches_transformers_generate() -> None:
    """KV cache, left padding, per-row positions and row dropping give exactly HF's greedy tokens."""
    model, tok, _ = _eos_prone()
    _sharpened(model, 3.0)
    engine = GRPOEngine(model, tok, GRPOParams(max_completion_length=10, generation_batch_size=8))
    prompt_ids = engine.encode_prompts(CHAT)
    ours = engine.generate_token_ids(prompt_ids, num_generations=2, greedy=True)
    model.eval()
    for p, group in zip(prompt_ids, ours):
        with torch.inference_mode():
            ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 do_sample=False, max_new_tokens=10, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id) + 1]
        assert group[0] == ref and group[1] == ref


def test_sampling_is_reproducible_from_the_seed() -> None:
    model, tok = make_tiny_model()
    a = GRPOEngine(model, tok, GRPOParams(max_completion_length=5, seed=7)).generate(CHAT[:2])
    b = GRPOEngine(model, tok, GRPOParams(max_completion_length=5, seed=7)).generate(CHAT[:2])
    c = GRPOEngine(model, tok, GRPOParams(max_completion_length=5, seed=8)).generate(CHAT[:2])
    assert a == b and a != c


# ---------------------------------------------------------------------------- the update


def test_shared_prompt_logprobs_and_gradients_match_a_plain_forward() -> None:
    """Prompt run once per group + LM head on completion tokens only == TRL-style full forward."""
    from trl.trainer.utils import selective_log_softmax

    model, tok = make_tiny_model()
    _sharpened(model, 5.0)
    params = GRPOParams(temperature=0.7)
    engine = GRPOEngine(model, tok, params)
    prompts = engine.encode_prompts(CHAT[:2])
    gen = torch.Generator().manual_seed(3)
    completions = [torch.randint(10, 1000, (n,), generator=gen).tolist() for n in (5, 1, 9, 3)]
    owner = [0, 0, 1, 1]
    weights = torch.rand(sum(len(c) for c in completions), generator=gen)

    logp, seq = engine.completion_logprobs(model, prompts, completions, owner)
    (logp * weights).sum().backward()
    ours_grad = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    ref_parts = []
    for c, o in zip(completions, owner):
        ids = torch.tensor([prompts[o] + c])
        logits = model(input_ids=ids).logits[:, len(prompts[o]) - 1:-1] / params.temperature
        ref_parts.append(selective_log_softmax(logits, torch.tensor([c]))[0])
    ref = torch.cat(ref_parts)
    (ref * weights).sum().backward()

    assert seq.tolist() == [i for i, c in enumerate(completions) for _ in c]
    assert torch.allclose(logp.detach(), ref.detach(), atol=1e-4, rtol=1e-4)
    for name, p in model.named_parameters():
        assert torch.allclose(ours_grad[name], p.grad, atol=1e-5, rtol=1e-3), name

    # Recomputing layers in the backward (all of them, or as many as a tiny memory budget needs)
    # reads the same shared prompt keys/values: same log-probs, same gradients. So does the
    # two-pass backward (completion pass first, then the prompt pass from the detached links).
    for kwargs in ({}, {"gradient_checkpointing": True}, {"activation_memory_mb": 1}):
        for two_pass in (False, True):
            if not kwargs and not two_pass:
                continue  # the plain one-graph case is the reference above
            model.zero_grad(set_to_none=True)
            if two_pass:  # as train_on runs it: zeroed gradients attached first (the LM head adds into its own)
                _attach_flat_grads(list(model.parameters()))
            ckpt = GRPOEngine(model, tok, GRPOParams(temperature=0.7, **kwargs))
            links: list = [] if two_pass else None
            logp2, _ = ckpt.completion_logprobs(model, prompts, completions, owner, links)
            assert ckpt._checkpointed == (2 if kwargs else 0)
            (logp2 * weights).sum().backward()
            if two_pass:
                assert len(links) == 1 + 2 * 2  # last prompt hidden + keys and values of both layers
                _backward_prompt_pass(links)
            assert torch.allclose(logp2.detach(), ref.detach(), atol=1e-4, rtol=1e-4)
            for name, p in model.named_parameters():
                assert torch.allclose(ours_grad[name], p.grad, atol=1e-5, rtol=1e-3), (kwargs, two_pass, name)


def test_activation_budget_recomputes_only_as_many_layers_as_needed() -> None:
    model, tok = make_tiny_model(num_hidden_layers=6)
    engine = GRPOEngine(model, tok, GRPOParams(activation_memory_mb=4))
    per_layer = engine.activation_bytes_per_token_layer()
    assert per_layer > 0
    assert engine._layers_to_recompute(tokens=10, completion_tokens=5) == 0
    assert engine._layers_to_recompute(tokens=100_000, completion_tokens=5) == 6
    counts = [engine._layers_to_recompute(tokens=t, completion_tokens=5) for t in range(50, 1000, 10)]
    assert counts == sorted(counts) and any(0 < c < 6 for c in counts)
    assert GRPOEngine(model, tok, GRPOParams(activation_memory_mb=0))._layers_to_recompute(100_000, 5) == 0


def test_step_changes_the_weights_and_reports_a_finite_loss() -> None:
    model, tok, _ = _eos_prone()
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=4, max_completion_length=8, micro_batch_size=3,
                                               learning_rate=1e-3))
    before = _snapshot(model)
    result = engine.step(CHAT, _length_reward)
    after = model.state_dict()
    assert math.isfinite(result.loss) and math.isfinite(result.grad_norm) and result.grad_norm > 0
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert [len(g) for g in result.completions] == [4, 4, 4] == [len(r) for r in result.rewards]
    assert result.completion_tokens == sum(len(c) for g in result.completion_ids for c in g)
    assert result.mean_reward == pytest.approx(sum(map(sum, result.rewards)) / 12)
    assert result.gen_seconds > 0 and result.train_seconds > 0 and result.tokens_per_second > 0
    assert engine.steps_done == 1


def test_equal_rewards_give_zero_advantage_and_leave_the_weights_alone() -> None:
    model, tok, _ = _eos_prone()
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=4, max_completion_length=6, learning_rate=1e-2))
    before = _snapshot(model)
    result = engine.step(CHAT, lambda i, comps: [1.5] * len(comps))
    assert result.loss == 0.0 and result.skipped_groups == 3 and result.grad_norm == 0.0
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v), k

    # Running such a group through the model anyway: the policy-gradient term is exactly zero.
    prompts = engine.encode_prompts(CHAT[:1])
    mb = _MicroBatch(prompts=prompts, completions=[[11, 12, 13], [14, 15]], owner=[0, 0],
                     advantages=[0.0, 0.0], token_weights=[0.2, 0.2])
    model.zero_grad(set_to_none=True)
    loss = engine._micro_batch_loss(mb)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_kl_term_with_beta_keeps_pulling_toward_the_reference() -> None:
    model, tok, _ = _eos_prone()
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=4, max_completion_length=6, learning_rate=1e-3,
                                               beta=0.5))
    assert engine.ref_model is not None and engine.ref_model is not model
    first = engine.step(CHAT, _length_reward)
    assert first.grad_norm > 0
    moved = _snapshot(model)
    # Equal rewards: no advantage, but the policy now differs from the reference, so the KL
    # term gives a positive loss and a gradient; no group may be skipped.
    second = engine.step(CHAT, lambda i, comps: [0.0] * len(comps))
    assert second.skipped_groups == 0 and second.loss > 0 and second.grad_norm > 0
    assert any(not torch.equal(moved[k], v) for k, v in model.state_dict().items())
    for k, v in engine.ref_model.state_dict().items():
        assert not v.requires_grad


def test_reward_function_errors_name_the_problem() -> None:
    model, tok = make_tiny_model()
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=2, max_completion_length=3))
    with pytest.raises(RewardError, match="returned 1 rewards for 2 completions"):
        engine.step(CHAT[:1], lambda i, comps: [1.0])
    with pytest.raises(RewardError, match="non-finite"):
        engine.step(CHAT[:1], lambda i, comps: [float("nan"), 1.0])


def test_reward_preferring_a_token_raises_its_probability() -> None:
    """A real learning signal: rewarding the letter 'A' raises p('A'); penalising it lowers p('A')."""

    def train(sign: float) -> tuple[float, float]:
        model, tok, letter = _eos_prone()
        engine = GRPOEngine(model, tok, GRPOParams(num_generations=8, max_completion_length=6, learning_rate=2e-3,
                                                   micro_batch_size=16, seed=5))
        prompts = engine.encode_prompts(CHAT)

        def p_letter() -> float:  # mean over prompts of p('A') as the first answer token
            with torch.no_grad():
                probs = [torch.softmax(model(input_ids=torch.tensor([p])).logits[0, -1], -1)[letter].item()
                         for p in prompts]
            return sum(probs) / len(probs)

        def reward(_: int, completions: list[str]) -> list[float]:
            return [sign * c.count(LETTER) / 6 for c in completions]

        start = p_letter()
        for _ in range(2):
            engine.step(CHAT, reward)
        return start, p_letter()

    start, end = train(+1.0)
    assert end > start + 0.2, (start, end)
    start, end = train(-1.0)
    assert end < start - 0.2, (start, end)


# ---------------------------------------------------------------------------- checkpoints


def _equal_optimizer_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["param_groups"] != b["param_groups"] or a["state"].keys() != b["state"].keys():
        return False
    for k in a["state"]:
        sa, sb = a["state"][k], b["state"][k]
        if sa.keys() != sb.keys():
            return False
        for name in sa:
            va, vb = sa[name], sb[name]
            if isinstance(va, torch.Tensor):
                if not torch.equal(va, vb):
                    return False
            elif va != vb:
                return False
    return True


def test_save_and_load_round_trip_model_optimizer_and_sampler(tmp_path: Path) -> None:
    model, tok, _ = _eos_prone()
    params = GRPOParams(num_generations=3, max_completion_length=5, learning_rate=1e-3, seed=11)
    engine = GRPOEngine(model, tok, params)
    engine.step(CHAT[:2], _length_reward)
    target = tmp_path / "ckpt"
    engine.save(target)
    engine.save(target)  # overwriting an existing checkpoint works too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "no temporary or old copies left behind"

    loaded = GRPOEngine.load(target)
    assert loaded.params == params and loaded.steps_done == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    assert _equal_optimizer_state(engine.optimizer.state_dict(), loaded.optimizer.state_dict())
    assert torch.equal(engine.generator.get_state(), loaded.generator.get_state())

    # restore() into an engine built around another model: same state, and the next step is identical
    other, tok2, _ = _eos_prone()
    with torch.no_grad():
        other.lm_head.weight.add_(1.0)
    restored = GRPOEngine(other, tok2, params)
    restored.restore(target)
    a = engine.step(CHAT[:2], _length_reward)
    b = restored.step(CHAT[:2], _length_reward)
    c = loaded.step(CHAT[:2], _length_reward)
    assert a.completion_ids == b.completion_ids == c.completion_ids
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]) and torch.equal(v, loaded.model.state_dict()[k]), k

    state = engine.state_dict()
    fresh = GRPOEngine(_eos_prone()[0], tok, params)
    fresh.load_state_dict(state)
    assert _equal_optimizer_state(fresh.optimizer.state_dict(), engine.optimizer.state_dict())


def test_load_reports_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No GRPO checkpoint"):
        GRPOEngine.load(tmp_path / "nothing-here")


def test_sampler_draws_from_the_softmax_and_respects_top_p() -> None:
    model, tok = make_tiny_model()
    engine = GRPOEngine(model, tok, GRPOParams(temperature=0.5, seed=3))
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    draws = engine._sample(logits.repeat_interleave(20_000, 0), greedy=False).view(2, -1)
    expected = torch.softmax(logits / 0.5, -1)
    for row in range(2):
        freq = torch.bincount(draws[row], minlength=5).double() / draws.shape[1]
        assert torch.allclose(freq, expected[row].double(), atol=0.015), (row, freq, expected[row])
    assert not (draws[0] == 4).any()  # a token with ~0 probability is never drawn
    nucleus = GRPOEngine(model, tok, GRPOParams(temperature=0.5, top_p=0.9, seed=3))
    kept = nucleus._sample(logits[:1].repeat_interleave(5_000, 0), greedy=False)
    assert set(kept.tolist()) == {0, 1}  # p = 0.865, 0.117, 0.016, ...: the top two are the first to cover 0.9
    assert engine._sample(logits, greedy=True).tolist() == [0, 0]


# ---------------------------------------------------------------------------- threads


def test_available_cpus_and_thread_tuner_pick_the_faster_count() -> None:
    import os

    from hivemind_exp.trainer.threads import ThreadTuner, available_cpus, configure_torch_threads

    before = torch.get_num_threads()
    try:
        assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))
        assert configure_torch_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="num_threads must be >= 0"):
            configure_torch_threads(-1)

        tuner = ThreadTuner(max_threads=4, reprobe_every=4)
        assert tuner.choose() == 4  # each candidate is measured once first
        tuner.record(4, 10.0, 1)
        assert tuner.choose() == 1
        tuner.record(1, 1.0, 1)  # 1 thread 10x cheaper (a contended machine)
        picks = []
        for _ in range(80):
            n = tuner.choose()
            picks.append(n)
            tuner.record(n, 10.0 if n == 4 else 1.0, 1)
        assert torch.get_num_threads() == picks[-1]
        assert picks.count(1) > 70 and 0 < picks.count(4) <= 3  # re-probed, rarely since it was 10x worse
        for _ in range(6):  # the load goes away: 4 threads become cheaper and win after a probe
            tuner.record(4, 0.2, 1)
        assert tuner.best() == 4
        assert ThreadTuner(max_threads=1).choose() == 1
    finally:
        torch.set_num_threads(before)


def test_tiny_model_dir_is_a_loadable_checkpoint(tiny_model_dir: Path) -> None:
    from hivemind_exp.trainer.model_source import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir), progress=False)
    reference, _ = make_tiny_model()
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert tok.eos_token == "<|im_end|>" and tok.padding_side == "left"
    for k, v in reference.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k  # same seed, same weights


def test_should_stop_interrupts_a_step_and_applies_nothing() -> None:
    from hivemind_exp.trainer.grpo import StepInterrupted

    model, tok = make_tiny_model()
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=4, max_completion_length=6, learning_rate=1e-2))

    def ranked(_: int, completions: list[str]) -> list[float]:
        return [float(k) for k in range(len(completions))]  # never a tie: every group informs the update

    before = _snapshot(model)
    calls = []

    def stop_on_third_poll() -> bool:
        calls.append(1)
        return len(calls) >= 3

    engine.should_stop = stop_on_third_poll
    with pytest.raises(StepInterrupted, match="generation"):
        engine.step(CHAT, ranked)
    assert len(calls) == 3  # polled once per decode step, stopped at the first true
    # Interrupted in the update: gradients already computed are dropped, the optimizer never stepped.
    prompt_ids = engine.encode_prompts(CHAT)
    engine.should_stop = None
    completions = engine.generate_token_ids(prompt_ids)
    rewards = [ranked(i, group) for i, group in enumerate(completions)]
    engine.should_stop = lambda: True
    with pytest.raises(StepInterrupted, match="policy update"):
        engine.train_on(prompt_ids, completions, rewards)
    assert engine.steps_done == 0 and not engine.optimizer.state
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    engine.should_stop = lambda: False
    assert engine.step(CHAT, ranked).grad_norm > 0 and engine.steps_done == 1


def test_lean_decode_matches_the_model_forward() -> None:
    from hivemind_exp.trainer.lean_decode import LlamaDecodeStep

    model, tok = make_tiny_model(seed=3)
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=3, max_completion_length=24))
    assert engine._lean_step() is not None
    prompt_ids = engine.encode_prompts(CHAT)
    engine.lean_decode = False
    reference = engine.generate_token_ids(prompt_ids, greedy=True)
    engine.lean_decode = True
    assert engine.generate_token_ids(prompt_ids, greedy=True) == reference
    # Sampling draws the same tokens from the same seed too (same logits up to float rounding).
    engine.generator.manual_seed(7)
    lean = engine.generate_token_ids(prompt_ids)
    engine.lean_decode = False
    engine.generator.manual_seed(7)
    assert engine.generate_token_ids(prompt_ids) == lean
    # What it cannot reproduce exactly it declines, and the engine uses the model's forward.
    gelu, tok2 = make_tiny_model(hidden_act="gelu")
    assert LlamaDecodeStep.build(gelu) is None
    other = GRPOEngine(gelu, tok2, GRPOParams(num_generations=2, max_completion_length=4))
    assert other._lean_step() is None and len(other.generate_token_ids(prompt_ids[:1])[0]) == 2


def test_freed_step_memory_goes_back_to_the_os() -> None:
    from hivemind_exp.trainer.grpo import _malloc_trim, _return_free_memory

    if _malloc_trim() is None:
        pytest.skip("not glibc: there is no malloc_trim to call")

    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024

    # Mid-sized blocks (below glibc's mmap threshold), each followed by a smaller one that stays:
    # freeing the big ones leaves holes inside the heap, which glibc keeps (measured: 0 MB back).
    pairs = [(bytearray(64 * 1024), bytearray(2000)) for _ in range(4000)]
    held = rss_mb()
    kept = [small for _, small in pairs]
    del pairs
    _return_free_memory()
    assert rss_mb() < held - 150
    assert len(kept) == 4000


HEAP_PROBE = """
import ctypes, sys
from hivemind_exp.trainer.memory import limit_heap_retention
if sys.argv[1] == "limited":
    assert limit_heap_retention()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024
# Freeing one mapped 24 MB block raises glibc's dynamic mmap threshold past it, as a torch step does.
libc.free(libc.malloc(24 << 20))
blocks = []
for _ in range(200):  # tensor-sized blocks (2 MB, touched), each followed by a smaller one that stays
    big = libc.malloc(2 << 20)
    libc.memset(big, 1, 2 << 20)
    blocks.append((big, libc.malloc(256 << 10)))  # too big for any hole the imports left
held = rss_mb()
for big, _ in blocks:
    libc.free(big)
print(held - rss_mb())
"""


def test_limited_heap_retention_returns_freed_tensor_sized_blocks_at_once() -> None:
    import subprocess
    import sys

    from hivemind_exp.trainer.memory import _malloc_trim

    if _malloc_trim() is None:
        pytest.skip("not glibc: there is no mallopt to call")

    def returned_mb(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.strip())

    # 200 blocks of 2 MB freed between small live ones: kept on the heap by default, unmapped when limited.
    assert returned_mb("default") < 100
    assert returned_mb("limited") > 350


@pytest.mark.parametrize("rows", [7, HEAD_CHUNK_ROWS, 2 * HEAD_CHUNK_ROWS + 41])
@pytest.mark.parametrize("attached", [False, True])
def test_chunked_token_logprobs_match_log_softmax(rows: int, attached: bool) -> None:
    """One chunk (logits kept) or several (recomputed in the backward), with or without a
    gradient already attached to the weight: same values and gradients as autograd's log_softmax."""
    gen = torch.Generator().manual_seed(rows)
    hidden = torch.randn(rows, 16, generator=gen, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(50, 16, generator=gen))
    bias = torch.randn(50, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (rows,), generator=gen)
    upstream = torch.randn(rows, generator=gen)
    prior = torch.randn(50, 16, generator=gen)

    ref = torch.log_softmax((hidden @ weight.t() + bias) / 0.7, dim=-1).gather(1, targets[:, None]).squeeze(1)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), [hidden, weight, bias])

    if attached:
        weight.grad = prior.clone()
    logp = _token_logprob_function().apply(hidden, weight, bias, targets, 1 / 0.7)
    (logp * upstream).sum().backward()
    assert torch.allclose(logp.detach(), ref.detach(), atol=1e-5)
    assert torch.allclose(hidden.grad, ref_grads[0], atol=1e-5)
    assert torch.allclose(weight.grad, ref_grads[1] + (prior if attached else 0), atol=1e-4)
    assert torch.allclose(bias.grad, ref_grads[2], atol=1e-5)
