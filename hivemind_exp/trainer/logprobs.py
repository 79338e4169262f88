"""Log-probabilities of completion tokens for the policy update, and the two-pass backward.

- ``completion_logprobs``: every completion token's log-prob given its prompt, as one flat
  vector. Each distinct prompt runs through the model once; its keys/values (with their
  gradient) are shared by the group's completions through a ``PrefixKV``, and the LM head is
  applied only to completion positions.
- ``_token_logprob_function``: the chunked LM-head log-softmax autograd function
  (``HEAD_CHUNK_ROWS`` rows at a time; the backward recomputes each chunk's logits and turns
  them into the gradient in place).
- ``_link`` / ``_backward_prompt_pass``: the backward in two passes (completions, then the prompts
  they share), so each weight gradient is added into ``.grad`` as soon as it exists.
- ``_continuation_mask``: the attention mask of completions that follow a cached prompt.

torch is imported inside the functions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hivemind_exp.trainer import hf_internals as hf
from hivemind_exp.trainer.sampling import _prefill_mask

if TYPE_CHECKING:
    import torch

HEAD_CHUNK_ROWS = 256  # LM-head rows per chunk: 256 x 49152 vocab x 4 B = 50 MB for SmolLM2


@functools.cache
def _token_logprob_function() -> type:
    """log softmax(h W^T / T)[target] for many rows, in chunks of `HEAD_CHUNK_ROWS` rows.

    autograd's `log_softmax` + `gather` keeps the [N, V] logits *and* the log-probs and allocates
    more of the same size in the backward (200 MB each for 1000 tokens of a 49k vocabulary).
    This keeps only each row's log-sum-exp; the backward recomputes one chunk of logits at a time
    and turns it into the gradient in place. The recompute costs one more head matmul (a few %
    of a step); a batch that fits one chunk keeps its logits and skips it. Built on first use so
    importing this module does not import torch.
    """
    import torch

    def chunk_logits(hidden, weight, bias, inv_temperature):  # type: ignore[no-untyped-def]
        logits = hidden @ weight.t()
        if bias is not None:
            logits += bias
        if inv_temperature != 1.0:
            logits *= inv_temperature
        return logits

    class TokenLogProbFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, inv_temperature):  # type: ignore[override]
            n = hidden.shape[0]
            logp = torch.empty(n, dtype=hidden.dtype, device=hidden.device)
            lse = torch.empty(n, dtype=hidden.dtype, device=hidden.device)
            kept = None
            for start in range(0, n, HEAD_CHUNK_ROWS):
                rows = slice(start, start + HEAD_CHUNK_ROWS)
                logits = chunk_logits(hidden[rows], weight, bias, inv_temperature)
                lse[rows] = torch.logsumexp(logits, dim=-1)
                logp[rows] = logits.gather(1, targets[rows, None]).squeeze(1) - lse[rows]
                kept = logits if n <= HEAD_CHUNK_ROWS else None
            ctx.save_for_backward(hidden, weight, bias, targets, lse)
            ctx.param = weight  # the leaf itself, whose .grad the backward may add into
            ctx.logits = kept
            ctx.inv_temperature = inv_temperature
            return logp

        @staticmethod
        def backward(ctx, grad):  # type: ignore[override]
            hidden, weight, bias, targets, lse = ctx.saved_tensors
            kept, param = ctx.logits, ctx.param
            ctx.logits = ctx.param = None
            want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
            grad_hidden = torch.empty_like(hidden) if want_hidden else None
            grad_weight = grad_bias = None
            into = None
            if want_weight:
                if param.grad is not None and param.is_leaf and not torch.is_grad_enabled():
                    # Add into the existing gradient (GRPOEngine attaches them before the backward):
                    # no [vocab, hidden] temporary while the activations are still alive.
                    into = param.grad
                else:
                    into = grad_weight = torch.zeros_like(weight)
            if want_bias:
                grad_bias = torch.zeros_like(bias)
            for start in range(0, hidden.shape[0], HEAD_CHUNK_ROWS):
                rows = slice(start, start + HEAD_CHUNK_ROWS)
                h, g = hidden[rows], grad[rows]
                logits = kept if kept is not None else chunk_logits(h, weight, bias, ctx.inv_temperature)
                # d logp / d logits = onehot(target) - softmax, computed in the logits buffer.
                logits.sub_(lse[rows, None]).exp_().mul_(-g[:, None])
                logits.scatter_add_(1, targets[rows, None], g[:, None])
                if ctx.inv_temperature != 1.0:
                    logits.mul_(ctx.inv_temperature)
                if grad_hidden is not None:
                    torch.mm(logits, weight, out=grad_hidden[rows])
                if into is not None:
                    into.addmm_(logits.t(), h)
                if grad_bias is not None:
                    grad_bias += logits.sum(0)
            return grad_hidden, grad_weight, grad_bias, None, None

    return TokenLogProbFunction


def completion_logprobs(model: Any, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                        owner: Sequence[int], *, pad_id: int, temperature: float, device: Any, cache_kwarg: str,
                        prompt_links: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                        before_forward: Callable[[int, int], None] | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every completion token given its prompt, as one flat vector (+ its completion index).

    Each distinct prompt runs once; its keys/values (and their gradient) are shared by the
    completions that follow it (`owner[i]` = index of completion i's prompt).

    With `prompt_links` (a list to fill), the completions read detached copies of what the
    prompt pass produced and the list gets (prompt-pass tensor, detached copy) pairs: the
    caller backpropagates the loss, then `_backward_prompt_pass(prompt_links)`. In one graph
    every layer's weight gradient from the completion pass waits in the autograd engine until
    the prompt pass reaches that layer (measured ~400 MB held at once for SmolLM2); in two
    passes each gradient is added into `.grad` as soon as it is computed.

    `before_forward(tokens, completion_tokens)`, when given, is called before the model runs with
    autograd on (the padded token count and the real completion tokens), to set how many layers
    recompute their activations.
    """
    import torch

    dev = device
    backbone = hf.decoder(model)
    head = model.get_output_embeddings()
    n = len(completions)
    widths = [len(c) for c in completions]
    if min(widths) < 1:
        raise ValueError("every completion needs at least one token")
    c_len = max(widths)
    comp = torch.full((n, c_len), pad_id, dtype=torch.long)
    comp_ok = torch.zeros((n, c_len), dtype=torch.bool)
    for r, c in enumerate(completions):
        comp[r, : len(c)] = torch.tensor(c, dtype=torch.long)
        comp_ok[r, : len(c)] = True
    comp, comp_ok = comp.to(dev), comp_ok.to(dev)
    owner_t = torch.tensor(list(owner), dtype=torch.long, device=dev)
    p_width = max(len(p) for p in prompts)
    p_ids = torch.full((len(prompts), p_width), pad_id, dtype=torch.long)
    p_ok = torch.zeros((len(prompts), p_width), dtype=torch.bool)
    for r, p in enumerate(prompts):
        p_ids[r, p_width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        p_ok[r, p_width - len(p):] = True
    p_ids, p_ok = p_ids.to(dev), p_ok.to(dev)
    p_len = p_ok.sum(-1)

    if before_forward is not None and torch.is_grad_enabled():
        tokens = len(prompts) * p_width + n * c_len  # padded: what the model actually runs
        before_forward(tokens, int(comp_ok.sum()))
    # use_cache=False: the prefix object is not a transformers cache that grows, only a
    # read-only source of the prompt's keys/values (so a recomputed layer sees the same ones).
    prefix = hf.PrefixKV()
    positions = (p_ok.long().cumsum(-1) - 1).clamp(min=0)
    p_hidden = hf.backbone_hidden(backbone, cache_kwarg, p_ids, _prefill_mask(p_ok, p_width), positions, prefix,
                                  use_cache=False)
    last = p_hidden[:, -1]
    if prompt_links is not None and torch.is_grad_enabled():
        last = _link(last, prompt_links)
        prefix.keys = {i: _link(k, prompt_links) for i, k in prefix.keys.items()}
        prefix.values = {i: _link(v, prompt_links) for i, v in prefix.values.items()}
    first = last.index_select(0, owner_t)  # predicts completion token 0
    if c_len > 1:
        shared = prefix.expanded(owner_t)
        keys_ok = torch.cat([p_ok.index_select(0, owner_t),
                             torch.ones((n, c_len - 1), dtype=torch.bool, device=dev)], dim=1)
        mask = _continuation_mask(keys_ok, p_width, c_len - 1)
        positions = p_len.index_select(0, owner_t)[:, None] + torch.arange(c_len - 1, device=dev)
        c_hidden = hf.backbone_hidden(backbone, cache_kwarg, comp[:, :-1], mask, positions, shared, use_cache=False)
        hidden = torch.cat([first[:, None], c_hidden], dim=1)
    else:
        hidden = first[:, None]
    seq = torch.arange(n, device=dev)[:, None].expand(n, c_len)[comp_ok]
    logp = _token_logprob_function().apply(hidden[comp_ok], head.weight, head.bias, comp[comp_ok],
                                           1.0 / temperature)
    return logp, seq


def _continuation_mask(key_ok: torch.Tensor, offset: int, q_len: int) -> torch.Tensor:
    """[B, 1, q_len, offset+q_len] mask for queries at positions offset.. following a cached prefix."""
    import torch

    dev = key_ok.device
    q = torch.arange(q_len, device=dev)[:, None] + offset
    k = torch.arange(key_ok.shape[1], device=dev)[None, :]
    return ((k <= q) & key_ok[:, None, :])[:, None]


def _link(tensor: torch.Tensor, links: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """A leaf copy of `tensor` (same storage) that collects the gradient for a later pass; see
    `completion_logprobs`."""
    if not tensor.requires_grad:
        return tensor
    leaf = tensor.detach().requires_grad_()
    links.append((tensor, leaf))
    return leaf


def _backward_prompt_pass(links: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Second half of a two-pass backward: push the gradients the completion pass left on the
    detached prompt outputs through the prompt pass."""
    import torch

    pairs = [(out, leaf.grad) for out, leaf in links if leaf.grad is not None]
    links.clear()
    if pairs:
        torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])
