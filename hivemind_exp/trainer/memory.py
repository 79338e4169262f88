"""Memory of the policy update: micro-batch planning, selective recompute, flat gradients, trimming.

- ``MemoryPlanner``: packs scored groups into ``_MicroBatch``es up to ``micro_batch_size``
  sequences and the ``activation_memory_mb`` budget (packing less beats recomputing layers to
  make more fit), estimates what a micro-batch keeps for its backward, and for a group too big
  for the budget alone makes just enough of the first layers recompute their activations.
- ``_attach_flat_grads``: every parameter's gradient as a view into one flat buffer per dtype.
- ``_malloc_trim`` / ``_return_free_memory``: hand the step's freed heap back to the OS (glibc).
- ``limit_heap_retention``: blocks of 1 MiB and more get their own mappings (glibc), so what a
  generation or a micro-batch frees goes back to the OS at once instead of staying on the heap.

torch is imported inside the functions.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hivemind_exp.trainer import hf_internals as hf
from hivemind_exp.trainer.logprobs import HEAD_CHUNK_ROWS

if TYPE_CHECKING:
    import torch

    from hivemind_exp.trainer.params import GRPOParams

log = logging.getLogger(__name__)


@dataclass
class _MicroBatch:
    prompts: list[list[int]]  # distinct prompts
    completions: list[list[int]]
    owner: list[int]  # completion -> index into `prompts`
    advantages: list[float]
    token_weights: list[float]  # per-token loss weight of each completion (the loss normaliser)


class MemoryPlanner:
    """Sizes micro-batches and recompute for one model; reads `params` live (the engine's object)."""

    def __init__(self, model: Any, lm_head: Any, layers: list[Any], params: GRPOParams):
        self.model = model
        self.lm_head = lm_head
        self.layers = layers
        self.params = params
        self.checkpointed = -1  # how many leading layers currently recompute in the backward

    def activation_bytes_per_token_layer(self) -> int:
        """Rough fp32 bytes one token keeps per decoder layer for the backward (measured ~55 KB for SmolLM2)."""
        cfg = hf.text_config(self.model)
        hidden = self._hidden_size()
        inter = int(getattr(cfg, "intermediate_size", 4 * hidden))
        heads = int(cfg.num_attention_heads)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
        floats = 10 * hidden + 4 * inter + 2 * heads * head_dim + 4 * kv_heads * head_dim
        return floats * self._param_bytes()

    def _param_bytes(self) -> int:
        return next(self.model.parameters()).element_size()

    def _hidden_size(self) -> int:
        return int(hf.text_config(self.model).hidden_size)

    def activation_bytes(self, tokens: int, completion_tokens: int) -> float:
        """Estimated memory a micro-batch keeps for its backward: every layer's activations + one
        chunk of logits (the LM head works in chunks of HEAD_CHUNK_ROWS)."""
        vocab = self.lm_head.weight.shape[0]
        return (tokens * self.activation_bytes_per_token_layer() * len(self.layers)
                + min(completion_tokens, HEAD_CHUNK_ROWS) * vocab * self._param_bytes())

    def layers_to_recompute(self, tokens: int, completion_tokens: int) -> int:
        """How many leading layers must recompute their activations to stay within activation_memory_mb."""
        n_layers = len(self.layers)
        if self.params.gradient_checkpointing:
            return n_layers
        if self.params.activation_memory_mb <= 0 or n_layers == 0:
            return 0
        per_layer = tokens * self.activation_bytes_per_token_layer()
        need = self.activation_bytes(tokens, completion_tokens)
        budget = self.params.activation_memory_mb * 2**20 - per_layer  # room for the layer being recomputed
        if need <= budget:
            return 0
        saving = per_layer - tokens * self._hidden_size() * self._param_bytes()  # a recomputed layer keeps its input
        return min(n_layers, math.ceil((need - budget) / max(saving, 1)))

    def set_checkpointed_layers(self, count: int) -> None:
        """Make the first `count` layers recompute their activations in the backward, the rest keep them."""
        if count == self.checkpointed:
            return
        from torch.utils.checkpoint import checkpoint

        recompute = functools.partial(checkpoint, use_reentrant=False)
        for i, layer in enumerate(self.layers):
            hf.set_recompute(layer, recompute if i < count else None)
        self.checkpointed = count
        log.debug("recomputing activations of %d of %d layers", count, len(self.layers))

    def recompute_for(self, tokens: int, completion_tokens: int) -> None:
        """Set the recomputed layers for a forward of this size (`completion_logprobs`' `before_forward`)."""
        self.set_checkpointed_layers(self.layers_to_recompute(tokens, completion_tokens))

    def plan(self, groups: list[tuple[int, list[int]]], prompt_ids: Sequence[Sequence[int]],
             completion_ids: Sequence[Sequence[Sequence[int]]], advantages: list[list[float]],
             weights: list[list[float]]) -> list[_MicroBatch]:
        """Whole groups (split only when larger than a micro-batch), longest first, packed up to
        `micro_batch_size` sequences and, when `activation_memory_mb` is set, to what fits in it
        (packing less beats recomputing layers to make more fit)."""
        size = self.params.micro_batch_size
        pieces: list[tuple[int, list[int]]] = []
        for i, members in groups:
            members = sorted(members, key=lambda j: -len(completion_ids[i][j]))
            for s in range(0, len(members), size):
                pieces.append((i, members[s:s + size]))
        pieces.sort(key=lambda p: (-max(len(completion_ids[p[0]][j]) for j in p[1]), -len(prompt_ids[p[0]])))
        budget = self.params.activation_memory_mb * 2**20 if self.params.activation_memory_mb > 0 else math.inf

        def footprint(chunk: list[tuple[int, list[int]]]) -> float:
            p_width = max(len(prompt_ids[i]) for i, _ in chunk)
            c_len = max(len(completion_ids[i][j]) for i, members in chunk for j in members)
            rows = sum(len(members) for _, members in chunk)
            return self.activation_bytes(len(chunk) * p_width + rows * c_len, rows * c_len)

        batches: list[_MicroBatch] = []
        current: list[tuple[int, list[int]]] = []
        count = 0
        for piece in pieces + [(-1, [])]:
            full = piece[0] < 0 or count + len(piece[1]) > size or (current and footprint(current + [piece]) > budget)
            if full:
                if current:
                    mb = _MicroBatch([], [], [], [], [])
                    for i, members in current:
                        mb.prompts.append(list(prompt_ids[i]))
                        for j in members:
                            mb.completions.append(list(completion_ids[i][j]))
                            mb.owner.append(len(mb.prompts) - 1)
                            mb.advantages.append(advantages[i][j])
                            mb.token_weights.append(weights[i][j])
                    batches.append(mb)
                current, count = [], 0
            if piece[0] >= 0:
                current.append(piece)
                count += len(piece[1])
        return batches


def _attach_flat_grads(params: Sequence[torch.Tensor]) -> None:
    """Give every parameter a zeroed gradient that is a view into one flat buffer per dtype.

    Why: gradients allocated one by one during the backward land between that micro-batch's
    activations in the C heap; once the activations are freed the holes fit nothing else and the
    next micro-batch grows the heap (measured ~0.5 GB of resident memory beyond the live tensors
    with SmolLM2 on CPU). One large buffer is a single mapping, returned whole when the step
    ends, and the backward adds into it in place.
    """
    import torch

    by_kind: dict[tuple[Any, Any], list[torch.Tensor]] = {}
    for p in params:
        by_kind.setdefault((p.dtype, p.device), []).append(p)
    for (dtype, device), group in by_kind.items():
        flat = torch.zeros(sum(p.numel() for p in group), dtype=dtype, device=device)
        offset = 0
        for p in group:
            p.grad = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


def _return_free_memory() -> None:
    """Hand the step's freed gradients and activations back to the OS.

    glibc keeps freed heap memory for reuse; after a step that is ~0.8 GB (SmolLM2-135M) the
    node holds while it waits for the next stage, per local peer. Trimming costs milliseconds.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
HEAP_MMAP_THRESHOLD = 1 << 20


@functools.cache
def limit_heap_retention() -> bool:
    """Serve allocations of >= 1 MiB from their own mappings, unmapped on free (glibc; process-wide).

    glibc raises its mmap threshold each time it frees a mapped block, up to 32 MiB, after which a
    step's KV cache and activations (mostly 1-30 MB tensors) come from the heap. There the freed
    blocks stay resident, fragmented, and the next allocation of another size (the gradient buffer)
    cannot reuse them. Measured at the SAPO shape: peak RSS 3.20 GB -> 2.84 GB. A fixed threshold
    also stops the dynamic raising. Idempotent. Returns False where there is no glibc mallopt.
    """
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD))
