"""One decode step (one new token per row) for Llama-architecture models without the module stack.

Why: on CPU a SmolLM2-135M decode step for 8 rows spent ~85 ms in its matmuls and ~50 ms more
in the Hugging Face forward around them (module calls, mask and cache bookkeeping, a dozen small
ops per norm and rotary embedding, three q/k/v and two gate/up matmuls where one each will do).
`LlamaDecodeStep` runs the same arithmetic as `LlamaModel.forward` for one token against our
static key/value cache: plain `F.linear` on the model's own weights, one `rms_norm` op per norm,
the model's own rotary embedding, `scaled_dot_product_attention` with grouped query heads, and
an in-place write of the new key/value at a known index.

`LlamaDecodeStep.build(model)` returns None for anything it does not reproduce exactly (other
architectures, biases it does not expect, non-SiLU MLPs, rotary variants that depend on the
sequence length); the engine then uses the model's own forward. Tests compare the two. Which
modules and config fields it reads, and how it writes into the cache, lives in `hf_internals`
(`llama_decode_parts`, `cache_kv`); this module is only the arithmetic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hivemind_exp.trainer.hf_internals import LlamaParts, cache_kv, llama_decode_parts

if TYPE_CHECKING:
    import torch


class LlamaDecodeStep:
    """Decode step for a `LlamaForCausalLM`-shaped model (reads its live weights; build is free)."""

    @classmethod
    def build(cls, model: Any) -> LlamaDecodeStep | None:
        parts = llama_decode_parts(model)
        return None if parts is None else cls(parts)

    def __init__(self, parts: LlamaParts):
        self.embed, self.rotary = parts.embed, parts.rotary
        self.heads, self.kv_heads, self.head_dim = parts.heads, parts.kv_heads, parts.head_dim
        self.hidden, self.inter = parts.hidden, parts.inter
        self.scale = self.head_dim ** -0.5
        # Separate q/k/v and gate/up matmuls: fusing them into one weight each measured ~15% slower
        # here (MKL picks a worse blocking for 8 x 576 @ 576 x 3072 than for two 1536-wide halves).
        self.layers = parts.layers
        self.norm_w, self.norm_eps = parts.norm_weight, parts.norm_eps

    def __call__(self, token: torch.Tensor, positions: torch.Tensor, key_ok: torch.Tensor, index: int,
                 cache: Any) -> torch.Tensor:
        """Hidden state after the final norm for one new token per row.

        token, positions: [rows]; key_ok: [rows, cache_len] (True = attend, the new slot included);
        `index`: the cache slot the new key/value go to; cache: a transformers `StaticCache` whose
        layers hold `keys`/`values` of shape [rows, kv_heads, cache_len, head_dim].
        """
        import torch
        import torch.nn.functional as F

        rows = token.shape[0]
        nq, nkv, d = self.heads, self.kv_heads, self.head_dim
        x = self.embed(token)  # [rows, hidden]
        cos, sin = self.rotary(x[:, None], positions[:, None])  # [rows, 1, d]
        cos, sin = cos[:, :, None], sin[:, :, None]  # [rows, 1, 1, d]: broadcast over heads
        half = d // 2
        mask = key_ok[:, None, None, :]
        shape = (self.hidden,)

        def rope(t: torch.Tensor) -> torch.Tensor:
            rotated = torch.cat((-t[..., half:], t[..., :half]), dim=-1)
            return t * cos + rotated * sin

        for i, (in_w, in_eps, q_p, k_p, v_p, o_p, post_w, post_eps, gate_w, up_w, down_w) in enumerate(self.layers):
            h = F.rms_norm(x, shape, in_w, in_eps)
            q = F.linear(h, q_p.weight, q_p.bias).view(rows, nq, 1, d)
            k = F.linear(h, k_p.weight, k_p.bias).view(rows, nkv, 1, d)
            v = F.linear(h, v_p.weight, v_p.bias).view(rows, nkv, 1, d)
            q, k = rope(q), rope(k)
            keys, values = cache_kv(cache, i)
            keys[:, :, index] = k[:, :, 0]
            values[:, :, index] = v[:, :, 0]
            att = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale,
                                                 enable_gqa=nq != nkv)
            x = x + F.linear(att.reshape(rows, nq * d), o_p.weight, o_p.bias)
            h = F.rms_norm(x, shape, post_w, post_eps)
            x = x + F.linear(F.silu(F.linear(h, gate_w)) * F.linear(h, up_w), down_w)
        return F.rms_norm(x, shape, self.norm_w, self.norm_eps)
