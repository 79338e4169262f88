"""bench/grpo_step.py's count of the FLOPs a GRPO step needs, on numbers worked out by hand."""

from __future__ import annotations

from types import SimpleNamespace

from tests.fixtures.scripts import load_script


def _bench():
    return load_script("bench/grpo_step.py", "grpo_step_bench")


CONFIG = SimpleNamespace(hidden_size=2, num_hidden_layers=1, vocab_size=3)  # lm_head: 6 params, body: 10 - 6


def test_one_prompt_one_token_by_hand() -> None:
    got = _bench().step_flops(CONFIG, 10, [2], [[1]], [True])
    # generation: prefill 2*4*2 + one logit row 12 + attention 4*2*(1+2) = 52; decode 1 token: 2*4 + 12 + 4*2*3 = 44
    assert got["generation"] == 96
    # training: 3 x (body 2*4*3 + logits 12*1 + attention 4*2*(1+2+3))
    assert got["training"] == 3 * (24 + 12 + 48)
    assert got["total"] == got["generation"] + got["training"]


def test_untrained_groups_cost_only_generation_and_prompt_is_prefilled_once() -> None:
    bench = _bench()
    one = bench.step_flops(CONFIG, 10, [2], [[1]], [False])
    two = bench.step_flops(CONFIG, 10, [2], [[1, 1]], [False])
    assert one["training"] == two["training"] == 0
    assert two["generation"] - one["generation"] == 44  # a second completion adds its decode, not a second prefill


def test_shapes_and_genrl_overrides() -> None:
    bench = _bench()
    assert bench.SHAPES == {"anchor": (4, 2), "sapo": (4, 8)}
    args = SimpleNamespace(shape="sapo", max_completion_length=128)
    over = bench.genrl_overrides(args)
    assert over["minibatch_size"] == 32 and over["num_generations"] == 8 and over["max_new_tokens"] == 128
