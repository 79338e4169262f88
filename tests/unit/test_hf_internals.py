"""The transformers internals the trainer relies on (`hivemind_exp/trainer/hf_internals.py`) still exist and behave.

Every failure names the installed transformers version and the missing or changed piece, so an
upgrade that breaks the fast paths says where to look instead of failing deep inside a GRPO step.
The tiny forwards compare each path with the model's own plain forward.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import transformers

from hivemind_exp.trainer import hf_internals as hf
from hivemind_exp.trainer.lean_decode import LlamaDecodeStep
from hivemind_exp.trainer.logprobs import _continuation_mask
from hivemind_exp.trainer.sampling import _prefill_mask
from tests.fixtures.tiny_model import make_tiny_model

VERSION = transformers.__version__
PROMPTS = [[101, 102, 103, 104, 105], [201, 202, 203]]  # different lengths: the short one is left-padded


def broken(what: str) -> str:
    return (f"transformers {VERSION}: {what}. hivemind_exp/trainer/hf_internals.py relies on it; "
            "adapt that module to this version (or pin transformers to one that passes)")


def require(obj: Any, path: str, why: str) -> Any:
    """getattr along a dotted path, failing with the version and the first missing attribute."""
    current = obj
    for part in path.split("."):
        if not hasattr(current, part):
            pytest.fail(broken(f"{type(obj).__name__}.{path} is missing ({type(current).__name__} has no "
                               f"attribute {part!r}; needed for {why})"), pytrace=False)
        current = getattr(current, part)
    return current


@contextlib.contextmanager
def relying_on(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # any failure here is an API change to report
        pytest.fail(broken(f"{what} raised {type(exc).__name__}: {exc}"), pytrace=False)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def plain_hidden(model: Any, ids: list[int]) -> torch.Tensor:
    """The backbone's own forward over one unpadded sequence: [len, hidden]."""
    return model.get_decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]


def left_padded(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    ok = torch.zeros((len(prompts), width), dtype=torch.bool)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        ok[r, width - len(p):] = True
    return ids, ok


def test_the_attributes_and_signatures_it_uses_exist() -> None:
    model, _ = make_tiny_model()
    static_cache = require(transformers, "StaticCache", "the decode loop's pre-allocated cache")
    params = inspect.signature(static_cache.__init__).parameters
    for name in ("config", "max_cache_len"):
        if name not in params:
            pytest.fail(broken(f"StaticCache.__init__ takes no {name!r} (it takes {list(params)})"), pytrace=False)
    layer_cls = require(transformers, "modeling_layers.GradientCheckpointingLayer", "per-layer recompute")
    for name in ("gradient_checkpointing", "_can_checkpoint_with_cache"):
        require(layer_cls, name, "per-layer recompute (set_recompute)")

    require(model, "get_decoder", "decoder()")
    require(model, "get_output_embeddings", "the LM head")
    require(model, "_tied_weights_keys", "tied_weight_keys() in GRPOEngine.restore")
    backbone = hf.decoder(model)
    name = hf.cache_kwarg(backbone)
    forward_params = inspect.signature(backbone.forward).parameters
    if name not in forward_params:
        pytest.fail(broken(f"{type(backbone).__name__}.forward takes its cache neither as 'cache' nor as "
                           f"'past_key_values' (it takes {list(forward_params)})"), pytrace=False)
    for param in ("input_ids", "attention_mask", "position_ids", "use_cache"):
        if param not in forward_params:
            pytest.fail(broken(f"{type(backbone).__name__}.forward takes no {param!r}"), pytrace=False)
    layers = hf.decoder_layers(backbone)
    if len(layers) != model.config.num_hidden_layers or not all(isinstance(x, layer_cls) for x in layers):
        pytest.fail(broken("the backbone's .layers are not its GradientCheckpointingLayer decoder layers"),
                    pytrace=False)

    # What lean_decode reads from a Llama model and its config.
    for path in ("embed_tokens", "rotary_emb", "norm.weight", "norm.variance_epsilon"):
        require(backbone, path, "lean_decode")
    rotary = inspect.signature(backbone.rotary_emb.forward).parameters
    if list(rotary)[:2] != ["x", "position_ids"]:
        pytest.fail(broken(f"rotary_emb.forward takes {list(rotary)}, not (x, position_ids)"), pytrace=False)
    for path in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                 "input_layernorm.weight", "input_layernorm.variance_epsilon",
                 "post_attention_layernorm.weight", "post_attention_layernorm.variance_epsilon"):
        require(layers[0], path, "lean_decode")
    cfg = hf.text_config(model)
    for path in ("model_type", "hidden_act", "num_attention_heads", "num_key_value_heads", "head_dim",
                 "hidden_size", "intermediate_size"):
        require(cfg, path, "lean_decode and the memory planner")
    if not (hasattr(cfg, "rope_parameters") or hasattr(cfg, "rope_scaling")):
        pytest.fail(broken("LlamaConfig has neither rope_parameters nor rope_scaling (lean_decode's rotary check)"),
                    pytrace=False)
    if hf.llama_decode_parts(model) is None:
        pytest.fail(broken("llama_decode_parts() declines a plain tiny Llama (a config field it checks changed)"),
                    pytrace=False)
    assert hf.llama_decode_parts(make_tiny_model(hidden_act="gelu")[0]) is None  # declines what it cannot redo
    assert "lm_head.weight" in hf.tied_weight_keys(model), broken("_tied_weights_keys does not name lm_head.weight")


@torch.no_grad()
def test_prefill_and_decode_through_a_static_cache_match_a_plain_forward() -> None:
    model, tok = make_tiny_model(seed=3, tie_word_embeddings=False)
    model.eval()
    backbone = hf.decoder(model)
    name = hf.cache_kwarg(backbone)
    new = 3
    ids, ok = left_padded(PROMPTS, tok.pad_token_id)
    width = ids.shape[1]
    key_ok = torch.cat([ok, torch.zeros((len(PROMPTS), new), dtype=torch.bool)], dim=1)
    positions = (ok.long().cumsum(-1) - 1).clamp(min=0)
    with relying_on("StaticCache(config=, max_cache_len=) and a pre-fill with a 4-D boolean mask into it"):
        cache = hf.static_cache(model.config, width + new)
        hidden = hf.backbone_hidden(backbone, name, ids, _prefill_mask(key_ok, width), positions, cache,
                                    use_cache=True)
    for r, p in enumerate(PROMPTS):
        assert close(hidden[r, -1], plain_hidden(model, p)[-1]), broken(
            "a left-padded pre-fill with our [B, 1, q, k] boolean mask and position_ids no longer gives the "
            "model's own hidden states")

    repeats = [2, 1]
    with relying_on("StaticCache.layers[i].keys / .values (replaced by row-repeated copies)"):
        hf.map_cache_rows(cache, lambda kv: kv.repeat_interleave(torch.tensor(repeats), dim=0))
        keys, values = hf.cache_kv(cache, 0)
    cfg = model.config
    assert keys.shape == values.shape == (3, cfg.num_key_value_heads, width + new, cfg.head_dim), broken(
        f"StaticCache layer keys have shape {tuple(keys.shape)}, not [rows, kv_heads, length, head_dim]")
    owners = [0, 0, 1]
    token = torch.tensor([11, 12, 13])
    next_pos = torch.tensor([len(PROMPTS[o]) for o in owners])
    key_ok = key_ok.repeat_interleave(torch.tensor(repeats), dim=0)
    key_ok[:, width] = True
    with relying_on("a one-token decode step through the model's forward into the static cache"):
        step = hf.backbone_hidden(backbone, name, token[:, None], key_ok[:, None, None, :], next_pos[:, None],
                                  cache, use_cache=True)[:, -1]
    reference = torch.stack([plain_hidden(model, PROMPTS[o] + [int(t)])[-1] for o, t in zip(owners, token)])
    assert close(step, reference), broken(
        "a decode step through a StaticCache whose rows were replaced no longer matches a plain forward "
        "(the cache no longer writes at the next slot of the layer tensors we hold?)")

    # lean_decode writes the same slot itself and reads the same modules: same hidden states.
    lean = LlamaDecodeStep.build(model)
    assert lean is not None
    with relying_on("lean_decode's decode step (llama_decode_parts, cache_kv)"):
        lean_hidden = lean(token, next_pos, key_ok, width, cache)
    assert close(lean_hidden, reference), broken(
        "LlamaDecodeStep no longer reproduces the Llama forward (its rotary embedding, norms or attention "
        "scaling changed)")

    keep = torch.tensor([0, 2])
    hf.map_cache_rows(cache, lambda kv: kv.index_select(0, keep))
    assert hf.cache_kv(cache, 1)[0].shape[0] == 2


def _prefix_pass(model: Any, pad: int, completions: list[list[int]], owner: list[int],
                 hint: str = "") -> tuple[Any, Any]:
    """The training forward's shape: prompts once into a PrefixKV, completions continue from it."""
    backbone = hf.decoder(model)
    name = hf.cache_kwarg(backbone)
    ids, ok = left_padded(PROMPTS, pad)
    width = ids.shape[1]
    prefix = hf.PrefixKV()
    positions = (ok.long().cumsum(-1) - 1).clamp(min=0)
    with relying_on("a forward whose cache is an object with only update() (hf_internals.PrefixKV)"):
        p_hidden = hf.backbone_hidden(backbone, name, ids, _prefill_mask(ok, width), positions, prefix,
                                      use_cache=False)
    n_layers = model.config.num_hidden_layers
    assert sorted(prefix.keys) == sorted(prefix.values) == list(range(n_layers)), broken(
        f"the attention layers called cache.update for layers {sorted(prefix.keys)}, not each of {n_layers} once "
        "(update(key_states, value_states, layer_idx, ...) is how PrefixKV records the prompt)" + hint)
    rows = torch.tensor(owner)
    c_len = len(completions[0])
    comp = torch.tensor(completions)
    keys_ok = torch.cat([ok.index_select(0, rows), torch.ones((len(owner), c_len), dtype=torch.bool)], dim=1)
    positions = ok.sum(-1).index_select(0, rows)[:, None] + torch.arange(c_len)
    with relying_on("a continuation forward that reads the prompt keys/values from PrefixKV.update"):
        c_hidden = hf.backbone_hidden(backbone, name, comp, _continuation_mask(keys_ok, width, c_len), positions,
                                      prefix.expanded(rows), use_cache=False)
    return p_hidden, c_hidden


def test_prefix_kv_and_per_layer_recompute_match_a_plain_forward() -> None:
    model, tok = make_tiny_model(seed=4, tie_word_embeddings=False)
    completions, owner = [[31, 32, 33], [41, 42, 43], [51, 52, 53]], [0, 1, 1]
    references = [plain_hidden(model, PROMPTS[o] + c)[len(PROMPTS[o]):] for c, o in zip(completions, owner)]
    model.zero_grad(set_to_none=True)
    sum(r.sum() for r in references).backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    calls = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, use_reentrant=False, **kwargs)

    for recompute in (None, counting):
        model.train()  # layers recompute only in training mode with autograd on
        layers = hf.decoder_layers(hf.decoder(model))
        for layer in layers:
            hf.set_recompute(layer, recompute)
        model.zero_grad(set_to_none=True)
        calls.clear()
        what = "with per-layer recompute (set_recompute)" if recompute else "through PrefixKV"
        hint = (" (with recompute on: does _can_checkpoint_with_cache still keep the cache in a recomputed layer?)"
                if recompute else "")
        _, c_hidden = _prefix_pass(model, tok.pad_token_id, completions, owner, hint)
        for r, ref in enumerate(references):
            assert close(c_hidden[r], ref.detach()), broken(
                f"completions continuing from the prompt's keys/values {what} no longer match a plain forward" + hint)
        c_hidden.sum().backward()
        if recompute:
            assert len(calls) == 2 * len(layers), broken(
                f"_gradient_checkpointing_func was called {len(calls)} times for {len(layers)} recomputing layers "
                "over two forwards (the layer no longer recomputes through it?)")
        for n, p in model.named_parameters():
            if n in ref_grads:
                assert p.grad is not None and torch.allclose(p.grad, ref_grads[n], atol=1e-5, rtol=1e-3), broken(
                    f"the gradient of {n} {what} differs from a plain forward's")
    for layer in hf.decoder_layers(hf.decoder(model)):
        hf.set_recompute(layer, None)
        assert layer.gradient_checkpointing is False


def test_tied_weights_survive_a_checkpoint_round_trip(tmp_path: Any) -> None:
    """`restore` loads model.safetensors with strict=False and forgives exactly the tied keys."""
    from safetensors.torch import load_file

    model, _ = make_tiny_model()
    model.save_pretrained(tmp_path, safe_serialization=True)
    other, _ = make_tiny_model(seed=9)
    missing, unexpected = other.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=False)
    tied = hf.tied_weight_keys(other)
    assert not unexpected and set(missing) <= tied, broken(
        f"a saved tied model lacks {missing}, which _tied_weights_keys ({sorted(tied)}) does not cover")
    other.tie_weights()
    assert other.lm_head.weight.data_ptr() == other.model.embed_tokens.weight.data_ptr()
    assert torch.equal(other.lm_head.weight, model.lm_head.weight)

