"""Sampling completions: prompts to token ids, then a batched decode over a static KV cache.

``Sampler(model, tokenizer, params, device)`` is the generation half of ``GRPOEngine``
(the engine owns one and generates through it) and works on its own: evaluation decodes
greedily with one and builds no optimizer, reference model or thread tuner.

- ``encode_prompts``: chat messages through the chat template, strings as they are; longer
  prompts keep their last ``max_prompt_length`` tokens.
- ``generate_token_ids`` / ``generate``: one pre-fill per *distinct* prompt, its KV cache copied
  to the group's rows, then a decode loop over a pre-allocated (static) cache with our own
  masks; rows that reached EOS are dropped from the batch as they finish, so a long straggler
  does not drag the whole batch along. fp32 Llama-architecture models on CPU run each decode
  step through ``lean_decode`` (the model's arithmetic without its per-module overhead).
- ``sample``: temperature, nucleus (top-p) and inverse-CDF sampling from a seeded generator.

Reads its ``params`` (a ``GRPOParams``: num_generations, max_prompt_length,
max_completion_length, temperature, top_p, generation_batch_size, seed) live, so a change to the
engine's params object applies to its sampler too. torch is imported inside the methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hivemind_exp.trainer import hf_internals as hf

if TYPE_CHECKING:
    import torch

    from hivemind_exp.trainer.params import GRPOParams
    from hivemind_exp.trainer.threads import ThreadTuner


def model_device(model: Any) -> torch.device:
    """The device a model's weights are on."""
    import torch

    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a completion: the generation config's, the model config's, the tokenizer's."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("Neither the tokenizer nor the model config names an end-of-sequence token; "
                         "set tokenizer.eos_token so completions can end.")
    return sorted(ids)


def progress_bar(total: int, desc: str, unit: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)


class Sampler:
    """Batched generation for one causal LM; never changes its weights.

    ``tuners``: optional ``ThreadTuner`` per kind of work ("decode" for decode steps, "train"
    for the pre-fill, which is bulk work like a training micro-batch); ``check_stop(where)`` is
    called before every decode step and may raise to abandon the generation.
    """

    def __init__(self, model: Any, tokenizer: Any, params: GRPOParams, device: Any = None, *,
                 progress: bool = False, tuners: dict[str, ThreadTuner] | None = None,
                 check_stop: Callable[[str], None] | None = None):
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.params = params
        self.device = torch.device(device) if device is not None else model_device(model)
        self.progress = progress
        self.tuners = tuners if tuners is not None else {}
        self.check_stop = check_stop
        self.eos_ids = eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.backbone = hf.decoder(model)
        self.lm_head = model.get_output_embeddings()
        if self.lm_head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings (LM head); GRPO needs a causal LM")
        self.cache_kwarg = hf.cache_kwarg(self.backbone)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(params.seed)
        # fp32 Llama models on CPU decode through LlamaDecodeStep (same arithmetic, far less
        # overhead per token); anything else through the model's own forward.
        self.lean_decode = True

    # ------------------------------------------------------------------ prompts

    def encode_prompts(self, prompts: Sequence[Any]) -> list[list[int]]:
        """Token ids per prompt: chat messages through the chat template, strings as they are.

        Prompts longer than `max_prompt_length` keep their last tokens (where the question ends).
        """
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise TypeError("prompts must be a list of prompts (strings or chat-message lists), not a single prompt")
        if not prompts:
            raise ValueError("no prompts given")
        texts: list[str] = []
        chats = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                continue
            if not isinstance(p, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in p):
                raise TypeError(f"prompt {i} must be a string or a list of {{'role': ..., 'content': ...}} messages, "
                                f"got {type(p).__name__}")
        templated: list[str] = []
        if chats:
            if not getattr(self.tokenizer, "chat_template", None):
                raise ValueError("chat-message prompts need a tokenizer with a chat template; pass plain strings instead")
            templated = list(self.tokenizer.apply_chat_template([prompts[i] for i in chats], tokenize=False,
                                                                add_generation_prompt=True))
        it = iter(templated)
        for p in prompts:
            texts.append(p if isinstance(p, str) else next(it))
        # The template already wrote BOS and friends; adding special tokens again would double them.
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        limit = self.params.max_prompt_length
        out = []
        for i, row in enumerate(ids):
            if not row:
                raise ValueError(f"prompt {i} is empty after tokenisation")
            out.append(list(row[-limit:]))
        return out

    # ------------------------------------------------------------------ generation

    def generate(self, prompts: Sequence[Any], num_generations: int | None = None,
                 greedy: bool = False) -> list[list[str]]:
        """`num_generations` completions (text, special tokens removed) for each prompt."""
        ids = self.generate_token_ids(self.encode_prompts(prompts), num_generations, greedy)
        return [self.decode(group) for group in ids]

    def decode(self, group: list[list[int]]) -> list[str]:
        """Texts of token-id sequences, special tokens removed."""
        return list(self.tokenizer.batch_decode(group, skip_special_tokens=True))

    def generate_token_ids(self, prompt_ids: Sequence[Sequence[int]], num_generations: int | None = None,
                           greedy: bool = False, max_new_tokens: int | None = None) -> list[list[list[int]]]:
        """Completion token ids per prompt per generation, each ending at (and including) its first EOS.

        At most `max_new_tokens` per completion (default: `params.max_completion_length`).
        """
        import torch

        g = self.params.num_generations if num_generations is None else num_generations
        if g < 1:
            raise ValueError(f"num_generations must be >= 1, got {g}")
        new = self.params.max_completion_length if max_new_tokens is None else max_new_tokens
        if new < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {new}")
        if greedy and g > 1:  # greedy copies are identical: decode one, repeat it
            once = self.generate_token_ids(prompt_ids, 1, greedy=True, max_new_tokens=new)
            return [[list(group[0]) for _ in range(g)] for group in once]
        batch = self.params.generation_batch_size
        order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))  # similar lengths together
        chunks: list[list[tuple[int, int]]] = []
        current: list[tuple[int, int]] = []
        used = 0
        for i in order:
            left = g
            while left:
                take = min(left, batch - used)
                current.append((i, take))
                used += take
                left -= take
                if used == batch:
                    chunks.append(current)
                    current, used = [], 0
        if current:
            chunks.append(current)
        out: list[list[list[int]]] = [[] for _ in prompt_ids]
        was_training = self.model.training
        self.model.eval()
        bar = progress_bar(total=len(prompt_ids) * g, desc="generate", unit="seq", enabled=self.progress)
        try:
            with torch.inference_mode():
                lean = self.lean_step()
                for chunk in chunks:
                    seqs = self._decode_chunk([list(prompt_ids[i]) for i, _ in chunk], [n for _, n in chunk], greedy,
                                              new, lean)
                    k = 0
                    for i, n in chunk:
                        out[i].extend(seqs[k:k + n])
                        k += n
                    bar.update(len(seqs))
        finally:
            bar.close()
            self.model.train(was_training)
            if self.device.type == "cpu":
                from hivemind_exp.trainer.memory import _return_free_memory  # memory imports this module

                # What the decode loop freed (its KV cache: ~0.45 GB for 32 rows of SmolLM2-135M)
                # goes back before training allocates; blocks below the mmap threshold would
                # otherwise stay on the heap.
                _return_free_memory()
        return out

    def sample(self, logits: torch.Tensor, greedy: bool) -> torch.Tensor:
        """One token per row of `logits`: the argmax, or a draw at `temperature` within `top_p`."""
        import torch

        if greedy:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.params.temperature, dim=-1)
        index = None
        if self.params.top_p < 1.0:
            probs, index = torch.sort(probs, dim=-1, descending=True)
            # drop a token when the tokens before it already cover top_p (the top token always stays)
            probs.masked_fill_(probs.cumsum(-1) - probs > self.params.top_p, 0.0)
        # Inverse-CDF sampling: one cumsum + binary search per row; torch.multinomial spent
        # ~13 ms a decode step here drawing exponentials over the whole vocabulary.
        cdf = probs.cumsum_(-1)
        u = torch.rand((cdf.shape[0], 1), generator=self.generator, device=cdf.device, dtype=cdf.dtype)
        picked = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=cdf.shape[-1] - 1)
        if index is not None:
            picked = index.gather(-1, picked)
        return picked.squeeze(-1)

    def lean_step(self) -> Any:
        """A LlamaDecodeStep over the current weights, or None to decode with the model's forward."""
        import torch

        if not self.lean_decode or self.device.type != "cpu":
            return None
        if next(self.model.parameters()).dtype != torch.float32:
            return None  # its norms would round differently from the model's in half precision
        from hivemind_exp.trainer.lean_decode import LlamaDecodeStep

        return LlamaDecodeStep.build(self.model)

    def _decode_chunk(self, prompts: list[list[int]], repeats: list[int], greedy: bool, new: int,
                      lean: Any = None) -> list[list[int]]:
        """Pre-fill each distinct prompt once, copy its cache `repeats[i]` times, sample until EOS or `new` tokens."""
        import torch

        dev = self.device
        n_prompts = len(prompts)
        width = max(len(p) for p in prompts)
        kv_len = width + new
        ids = torch.full((n_prompts, width), self.pad_id, dtype=torch.long)
        key_ok = torch.zeros((n_prompts, kv_len), dtype=torch.bool)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            key_ok[r, width - len(p):width] = True
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        ids, key_ok = ids.to(dev), key_ok.to(dev)
        positions = (key_ok[:, :width].long().cumsum(-1) - 1).clamp(min=0)
        cache = hf.static_cache(self.model.config, kv_len)
        prefill = self.tuners.get("train")  # a pre-fill is bulk work like a training micro-batch
        if prefill is not None:
            prefill.apply_best()
        hidden = hf.backbone_hidden(self.backbone, self.cache_kwarg, ids, _prefill_mask(key_ok, width), positions,
                                    cache, use_cache=True)
        logits = self._head_logits(hidden[:, -1])

        rep = torch.tensor(repeats, dtype=torch.long, device=dev)
        if any(r != 1 for r in repeats):
            hf.map_cache_rows(cache, lambda kv: kv.repeat_interleave(rep, dim=0))
            logits = logits.repeat_interleave(rep, dim=0)
            key_ok = key_ok.repeat_interleave(rep, dim=0)
        next_pos = lengths.to(dev).repeat_interleave(rep)
        rows = sum(repeats)
        tokens = torch.full((rows, new), self.pad_id, dtype=torch.long)
        out_len = torch.full((rows,), new, dtype=torch.long)
        row_id = torch.arange(rows)  # original row of each active row
        done = torch.zeros(rows, dtype=torch.bool)  # finished but still in the batch
        eos = torch.tensor(self.eos_ids, dtype=torch.long)
        tuner = self.tuners.get("decode")
        for t in range(new):
            if self.check_stop is not None:
                self.check_stop("generation")
            threads = tuner.choose() if tuner else 0
            tick = time.perf_counter()
            token = self.sample(logits, greedy).cpu()
            live = ~done
            tokens[row_id[live], t] = token[live]
            hit = live & torch.isin(token, eos)
            out_len[row_id[hit]] = t + 1
            done |= hit
            if t == new - 1 or bool(done.all()):
                break
            n_done = int(done.sum())
            if n_done and n_done >= max(1, len(done) // 8):
                # Drop finished rows; copying the cache costs about as much as a decode step,
                # so wait until an eighth of the batch has finished.
                keep = (~done).nonzero().squeeze(1)
                keep_dev = keep.to(dev)
                hf.map_cache_rows(cache, lambda kv: kv.index_select(0, keep_dev))
                key_ok, next_pos = key_ok.index_select(0, keep_dev), next_pos.index_select(0, keep_dev)
                row_id, token, done = row_id[keep], token[keep], done[keep]
            key_ok[:, width + t] = True
            if lean is not None:
                logits = self._head_logits(lean(token.to(dev), next_pos, key_ok, width + t, cache))
            else:
                hidden = hf.backbone_hidden(self.backbone, self.cache_kwarg, token.to(dev)[:, None],
                                            key_ok[:, None, None, :], next_pos[:, None], cache, use_cache=True)
                logits = self._head_logits(hidden[:, -1])
            next_pos = next_pos + 1
            if tuner:
                tuner.record(threads, time.perf_counter() - tick, len(row_id))
        return [tokens[r, : int(out_len[r])].tolist() for r in range(rows)]

    def _head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head for a few rows. `W @ h.T` streams the [vocab, hidden] weight once; on CPU (MKL)
        it ran 2-3x faster than `F.linear(h, W)` for 4-16 rows (16 vs 33 ms per decode step here)."""
        weight = self.lm_head.weight
        logits = (weight @ hidden.t()).t()
        if getattr(self.lm_head, "bias", None) is not None:
            logits = logits + self.lm_head.bias
        return logits.contiguous()


def _prefill_mask(key_ok: torch.Tensor, q_len: int) -> torch.Tensor:
    """[B, 1, q_len, K] boolean mask for the first q_len positions: causal, padding keys hidden.

    A padding query would see no key at all, and a fully masked softmax row is NaN that then
    leaks into later layers through its keys/values, so every query may at least see itself.
    """
    import torch

    dev = key_ok.device
    k_len = key_ok.shape[1]
    q = torch.arange(q_len, device=dev)[:, None]
    k = torch.arange(k_len, device=dev)[None, :]
    mask = (k <= q) & key_ok[:, None, :]
    mask |= k == q
    return mask[:, None]
