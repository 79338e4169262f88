"""Every transformers internal the engine relies on, in one module.

The fast paths go around `model.generate` and the model's own training forward, so they depend
on how transformers is built inside, beyond its documented API. Each such dependency is a
function or class here, and nothing else under `hivemind_exp.trainer` touches those internals.
`tests/unit/test_hf_internals.py` checks each one (the attribute or signature exists, and a tiny
forward through it gives the model's own numbers) and names the transformers version and the
missing piece when an upgrade breaks one. Written against transformers 5.x.

- `decoder`, `decoder_layers`, `text_config`: `model.model` where there is no `get_decoder()`,
  the backbone's `.layers`, and the text config of a multi-modal config.
- `cache_kwarg`, `backbone_hidden`: the backbone's forward takes its cache as `cache=` (5.x) or
  `past_key_values=` (before); it accepts a ready [batch, 1, queries, keys] boolean mask
  (True = attend) plus explicit `position_ids`, and then asks the cache for nothing but
  `update(keys, values, layer_idx, ...)`, which each attention layer calls whenever a cache is
  passed, `use_cache=False` included.
- `static_cache`, `map_cache_rows`, `cache_kv`: a `StaticCache` holds one object per decoder
  layer in `.layers`, each with `keys` / `values` tensors [batch, kv_heads, length, head_dim]
  that may be replaced by row-selected copies and written in place.
- `PrefixKV`: an object with only that `update` method serves as the cache of a training forward.
- `set_recompute`: `GradientCheckpointingLayer`'s per-layer `gradient_checkpointing`,
  `_gradient_checkpointing_func` and `_can_checkpoint_with_cache`.
- `tied_weight_keys`: `PreTrainedModel._tied_weights_keys` (a dict in 5.x, a list before).
- `llama_decode_parts`: Llama's config fields and module names (`embed_tokens`, `norm`,
  `rotary_emb(x, position_ids) -> (cos, sin)`, `self_attn.{q,k,v,o}_proj`,
  `mlp.{gate,up,down}_proj`, the norms' `weight` / `variance_epsilon`) for `lean_decode`, which
  redoes Llama's arithmetic on them (rotate-half rotary embedding, head_dim ** -0.5 scaling).

Nothing is imported at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def text_config(model: Any) -> Any:
    """The config of the language model (the text part of a multi-modal config)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def decoder(model: Any) -> Any:
    """The decoder stack under the LM head (embeddings, layers, final norm)."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def decoder_layers(backbone: Any) -> list[Any]:
    """The backbone's decoder layers in order ([] when it does not expose them)."""
    return list(getattr(backbone, "layers", []))


def cache_kwarg(backbone: Any) -> str:
    """The name under which the backbone's forward takes its key/value cache."""
    import inspect

    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def backbone_hidden(backbone: Any, cache_name: str, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                    cache: Any, use_cache: bool) -> torch.Tensor:
    """Last hidden states of `ids` with our own 4-D boolean mask, positions and cache."""
    kwargs = {cache_name: cache, "use_cache": use_cache}
    return backbone(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs).last_hidden_state


def static_cache(config: Any, max_len: int) -> Any:
    """A pre-allocated key/value cache of `max_len` positions for every layer."""
    from transformers import StaticCache

    return StaticCache(config=config, max_cache_len=max_len)


def map_cache_rows(cache: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Replace every layer's keys and values by `fn(tensor)` (rows repeated or selected)."""
    for layer in cache.layers:
        layer.keys = fn(layer.keys)
        layer.values = fn(layer.values)


def cache_kv(cache: Any, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer `index`'s cached keys and values, [rows, kv_heads, length, head_dim], to write in place."""
    layer = cache.layers[index]
    return layer.keys, layer.values


class PrefixKV:
    """Stands in for a transformers cache inside training forwards; only `update` is ever called.

    Recording (no prefix yet): each layer's prompt keys/values are kept, with their graph.
    Continuing (`expanded`): each layer's prompt keys/values, copied to the rows of the
    completions that follow that prompt, are put in front of the new ones. Nothing is mutated
    while continuing, so a layer recomputed in the backward gets exactly the same inputs.
    """

    def __init__(self, keys: dict[int, Any] | None = None, values: dict[int, Any] | None = None):
        self.prefix_keys = keys
        self.prefix_values = values
        self.keys: dict[int, Any] = {}
        self.values: dict[int, Any] = {}

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        import torch

        if self.prefix_keys is None or self.prefix_values is None:
            self.keys[layer_idx], self.values[layer_idx] = key_states, value_states
            return key_states, value_states
        return (torch.cat([self.prefix_keys[layer_idx], key_states], dim=-2),
                torch.cat([self.prefix_values[layer_idx], value_states], dim=-2))

    def expanded(self, rows: Any) -> PrefixKV:
        """A continuing prefix whose row i is recorded row rows[i]."""
        return PrefixKV({i: k.index_select(0, rows) for i, k in self.keys.items()},
                        {i: v.index_select(0, rows) for i, v in self.values.items()})


def set_recompute(layer: Any, recompute: Callable[..., Any] | None) -> None:
    """Make a decoder layer recompute its activations in the backward through `recompute`
    (a `torch.utils.checkpoint.checkpoint`), or keep them (None)."""
    layer.gradient_checkpointing = recompute is not None
    if recompute is not None:
        layer._gradient_checkpointing_func = recompute
        # our prefix only reads the cached prompt keys/values, so the replay sees the same ones
        layer._can_checkpoint_with_cache = True


def tied_weight_keys(model: Any) -> set[str]:
    """State-dict keys that share another key's tensor (absent from a safetensors checkpoint)."""
    return set(getattr(model, "_tied_weights_keys", None) or ())


@dataclass
class LlamaParts:
    """What one Llama decode step reads: live modules and weights (no copies), and sizes."""

    embed: Any  # token ids [rows] -> [rows, hidden]
    rotary: Any  # (x [rows, 1, hidden], positions [rows, 1]) -> cos, sin [rows, 1, head_dim]
    # per layer: (input norm weight, eps, q_proj, k_proj, v_proj, o_proj, post-attention norm weight, eps,
    #             gate weight, up weight, down weight)
    layers: list[tuple[Any, ...]]
    norm_weight: Any
    norm_eps: float
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    inter: int


def llama_decode_parts(model: Any) -> LlamaParts | None:
    """The parts of a `LlamaForCausalLM`-shaped model, or None for anything `lean_decode` would not
    reproduce exactly (other architectures, unexpected biases, non-SiLU MLPs, rotary variants that
    depend on the sequence length)."""
    cfg = text_config(model)
    if getattr(cfg, "model_type", None) != "llama" or getattr(cfg, "hidden_act", None) != "silu":
        return None
    if getattr(cfg, "mlp_bias", False) or getattr(cfg, "pretraining_tp", 1) != 1:
        return None
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", "linear", "llama3"):
        return None  # dynamic variants change with the sequence length: leave them to transformers
    try:
        backbone = decoder(model)
    except AttributeError:
        return None
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if backbone is None or not all(hasattr(backbone, n) for n in needed):
        return None
    layers = []
    for layer in backbone.layers:
        att, mlp = layer.self_attn, layer.mlp
        layers.append((
            layer.input_layernorm.weight, float(layer.input_layernorm.variance_epsilon),
            att.q_proj, att.k_proj, att.v_proj, att.o_proj,
            layer.post_attention_layernorm.weight, float(layer.post_attention_layernorm.variance_epsilon),
            mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight,
        ))
    heads = int(cfg.num_attention_heads)
    return LlamaParts(
        embed=backbone.embed_tokens, rotary=backbone.rotary_emb, layers=layers,
        norm_weight=backbone.norm.weight, norm_eps=float(backbone.norm.variance_epsilon),
        heads=heads, kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads),
        hidden=int(cfg.hidden_size), inter=int(cfg.intermediate_size),
    )
