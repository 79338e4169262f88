"""The GRPO step of a swarm node: sample a group of completions per prompt, score them, one policy update.

Why not `trl.GRPOTrainer`: on the 2-core CPU machine one stock step (gradient checkpointing,
plain `generate`, 8 completions of <= 128 tokens of SmolLM2-135M) took ~700 s; `bench/grpo_step.py`
measures the two side by side and is the reason this loop exists. The objective is TRL's
(group-normalised advantages with TRL's `nanstd`, its clipped-ratio per-token loss, its `dapo` /
`grpo` / `dr_grpo` normalisers, the k3 KL estimate when `beta > 0`); the work done to get there is not:

- Generation: one pre-fill per *distinct* prompt, its KV cache copied to the group's rows, then a
  decode loop over a pre-allocated (static) cache with our own masks; rows that reached EOS are
  dropped from the batch as they finish, so a long straggler does not drag the whole batch along.
  fp32 Llama-architecture models on CPU run each decode step through `lean_decode` (the model's
  arithmetic without its per-module overhead).
- Training: with one update per generation the old log-probs equal the current ones, so they are
  never recomputed (`ratio = exp(logp - logp.detach())`). The prompt goes through the model once
  per group (its keys/values, with their gradient, are shared by the group's completions), the LM
  head is applied only to completion positions, in chunks of 256 rows whose logits the backward
  recomputes and turns into the gradient in place. Micro-batches are whole groups sorted by length (little padding).
  Groups whose rewards are all equal have zero advantage and, without a KL term, zero gradient:
  they are counted in the loss normaliser (as TRL does) but not run through the model.
- Memory: no gradient checkpointing by default. Micro-batches are packed only up to
  `activation_memory_mb`; a group too big for it alone recomputes just enough of its first layers
  in the backward (the prompt keys/values are read-only then, so the replay is exact). No
  reference model unless `beta > 0`. The backward runs in two passes (completions, then the
  prompts they share) so each weight gradient is added into one flat per-step buffer as soon as
  it exists. Peak RSS for SmolLM2 (params + AdamW + gradients = 2.2 GB of it): 2.9 GB at the
  default 256 MB budget, 3.35 GB at 1024 MB (a little less recompute).
- Threads: the CPUs this process may use (affinity, cgroup quota). With `num_threads=0` a
  `ThreadTuner` times 1 thread against all of them for decode steps and for micro-batches, since
  on a machine other processes also use, OpenMP threads spinning at barriers can make 2 threads
  several times slower than 1.

`GRPOEngine.save` / `load` write a Hugging Face checkpoint (model + tokenizer) plus the optimizer
and sampler state, atomically.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hivemind_exp.trainer.threads import ThreadTuner, configure_torch_threads

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

RewardFn = Callable[[int, list[str]], Sequence[float]]

LOSS_TYPES = ("dapo", "grpo", "dr_grpo")
STATE_FILE = "trainer_state.pt"
META_FILE = "engine.json"
CHECKPOINT_FORMAT = 1


class GRPOParamsError(ValueError):
    """A GRPO parameter is out of range; the message names it and says what to use."""


class StepInterrupted(RuntimeError):
    """`should_stop` asked the step to end early; the model and optimizer are as before the step."""


class RewardError(ValueError):
    """The reward function returned something that cannot be trained on."""


@dataclass
class GRPOParams:
    """Sizes and hyper-parameters of one GRPO step (filled from the device profile YAML)."""

    num_generations: int = 4  # completions per prompt (the GRPO group)
    max_prompt_length: int = 512  # longer prompts keep their last tokens
    max_completion_length: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    learning_rate: float = 5e-6
    beta: float = 0.0  # KL coefficient; 0 = no reference model (saves a forward pass)
    epsilon: float = 0.2  # ratio clipping (only matters with >1 update per generation)
    micro_batch_size: int = 8  # sequences per forward/backward chunk (gradient accumulation inside one step)
    generation_batch_size: int = 32  # sequences per decode batch
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False  # recompute every layer in the backward (least memory, ~1/3 more compute)
    # Per micro-batch; above it the first layers are recomputed (0 = no limit). 256 keeps a
    # SmolLM2 step under 3 GB peak RSS for ~5% more time than 1024 (bench/grpo_step.py).
    activation_memory_mb: int = 256
    seed: int = 0
    loss_type: str = "dapo"  # TRL's normaliser: dapo (per token), grpo (per sequence), dr_grpo (per max length)
    num_threads: int = 0  # torch CPU threads; 0 = every CPU this process may use

    def __post_init__(self) -> None:
        problems = []

        def need(ok: bool, name: str, fix: str) -> None:
            if not ok:
                problems.append(f"{name}={getattr(self, name)!r}: {fix}")

        ints = ("num_generations", "max_prompt_length", "max_completion_length", "micro_batch_size",
                "generation_batch_size", "seed", "num_threads", "activation_memory_mb")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{name}={value!r}: must be a whole number")
        floats = ("temperature", "top_p", "learning_rate", "beta", "epsilon", "max_grad_norm", "weight_decay")
        for name in floats:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"{name}={value!r}: must be a finite number")
        if problems:
            raise GRPOParamsError("Invalid GRPO parameters:\n  - " + "\n  - ".join(problems))
        need(self.num_generations >= 2, "num_generations",
             "use >= 2: advantages are relative to the rest of the group, one completion has nothing to compare with")
        need(self.max_prompt_length >= 1, "max_prompt_length", "use >= 1 (tokens kept from the end of the prompt)")
        need(self.max_completion_length >= 1, "max_completion_length", "use >= 1 (new tokens per completion)")
        need(self.temperature > 0, "temperature", "use > 0 (1.0 samples the model's own distribution)")
        need(0 < self.top_p <= 1, "top_p", "use a value in (0, 1]; 1.0 turns nucleus sampling off")
        need(0 < self.learning_rate < 1, "learning_rate", "use a small positive value such as 5e-6")
        need(self.beta >= 0, "beta", "use >= 0 (0 turns the KL penalty and the reference model off)")
        need(0 <= self.epsilon < 1, "epsilon", "use a value in [0, 1), e.g. 0.2")
        need(self.micro_batch_size >= 1, "micro_batch_size", "use >= 1 sequences per forward/backward chunk")
        need(self.generation_batch_size >= 1, "generation_batch_size", "use >= 1 sequences per decode batch")
        need(self.max_grad_norm > 0, "max_grad_norm", "use > 0, e.g. 1.0")
        need(self.weight_decay >= 0, "weight_decay", "use >= 0")
        need(self.num_threads >= 0, "num_threads", "use 0 (all available CPUs) or a positive count")
        need(self.activation_memory_mb >= 0, "activation_memory_mb",
             "use 0 (never recompute activations) or a budget in MB such as 512")
        need(self.loss_type in LOSS_TYPES, "loss_type", f"use one of {', '.join(LOSS_TYPES)}")
        if not isinstance(self.gradient_checkpointing, bool):
            problems.append(f"gradient_checkpointing={self.gradient_checkpointing!r}: must be true or false")
        if problems:
            raise GRPOParamsError("Invalid GRPO parameters:\n  - " + "\n  - ".join(problems))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "GRPO parameters") -> GRPOParams:
        """Build from a profile's `grpo:` mapping; unknown keys are an error that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GRPOParamsError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys are {', '.join(sorted(known))}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StepResult:
    """What one GRPO step did; rewards and completions are per prompt, in prompt order."""

    completions: list[list[str]]
    rewards: list[list[float]]
    loss: float
    mean_reward: float
    completion_tokens: int  # tokens trained on, EOS included (as TRL's completion mask)
    gen_seconds: float
    train_seconds: float
    tokens_per_second: float  # completion_tokens / (gen_seconds + train_seconds)
    grad_norm: float = 0.0
    skipped_groups: int = 0  # groups with equal rewards (zero advantage) not run through the model
    completion_ids: list[list[list[int]]] = field(default_factory=list, repr=False)


@dataclass
class _MicroBatch:
    prompts: list[list[int]]  # distinct prompts
    completions: list[list[int]]
    owner: list[int]  # completion -> index into `prompts`
    advantages: list[float]
    token_weights: list[float]  # per-token loss weight of each completion (the loss normaliser)


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


def group_advantages(rewards: Sequence[Sequence[float]]) -> list[list[float]]:
    """TRL's scale_rewards="group": (r - group mean) / (unbiased group std + 1e-4); NaN -> 0."""
    out = []
    for group in rewards:
        n = len(group)
        if n < 2 or max(group) == min(group):
            out.append([0.0] * n)  # exactly zero, not a rounding residue of (r - mean)
            continue
        mean = sum(group) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (n - 1))
        out.append([(r - mean) / (std + 1e-4) for r in group])
    return out


class GRPOEngine:
    """Generation and GRPO updates for one policy model (see the module docstring for the design)."""

    def __init__(self, model: Any, tokenizer: Any, params: GRPOParams | None = None, device: str = "cpu",
                 progress: bool = False):
        import torch

        self.params = params if params is not None else GRPOParams()
        if not isinstance(self.params, GRPOParams):
            raise TypeError(f"params must be a GRPOParams, got {type(self.params).__name__}")
        self.device = torch.device(device)
        self.progress = progress
        self.num_threads = configure_torch_threads(self.params.num_threads) if self.device.type == "cpu" else 0
        # num_threads=0 on CPU: pick 1 thread or all by timing (see ThreadTuner), separately for
        # decode steps (small matmuls, most sensitive to contention) and training micro-batches.
        auto = self.device.type == "cpu" and self.params.num_threads == 0 and self.num_threads > 1
        self.tuners: dict[str, ThreadTuner] = (
            {"decode": ThreadTuner(self.num_threads, reprobe_every=32), "train": ThreadTuner(self.num_threads, 6)}
            if auto else {}
        )
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.eos_ids = self._eos_ids()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        self.lm_head = model.get_output_embeddings()
        if self.lm_head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings (LM head); GRPO needs a causal LM")
        self._cache_kwarg = "cache" if "cache" in inspect.signature(self.backbone.forward).parameters else "past_key_values"
        self.layers = list(getattr(self.backbone, "layers", []))
        self._checkpointed = -1  # how many leading layers currently recompute in the backward
        self.ref_model = None
        if self.params.beta > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.optimizer = self._make_optimizer()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.params.seed)
        self.steps_done = 0
        # Polled between decode steps and micro-batches, so Ctrl-C ends a minutes-long CPU
        # step within about one decode step instead of after it (see StepInterrupted).
        self.should_stop: Callable[[], bool] | None = None
        # fp32 Llama models on CPU decode through LlamaDecodeStep (same arithmetic, far less
        # overhead per token); anything else through the model's own forward.
        self.lean_decode = True

    def _check_stop(self, where: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise StepInterrupted(f"GRPO step stopped during {where}; nothing was applied")

    # ------------------------------------------------------------------ set-up

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), getattr(self.model, "config", None)):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        if not ids:
            raise ValueError("Neither the tokenizer nor the model config names an end-of-sequence token; "
                             "set tokenizer.eos_token so completions can end.")
        return sorted(ids)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        import torch

        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("The model has no trainable parameters (all requires_grad=False).")
        kwargs: dict[str, Any] = {"lr": self.params.learning_rate, "weight_decay": self.params.weight_decay,
                                  "betas": (0.9, 0.999), "eps": 1e-8}
        try:
            # fused: no per-step temporaries the size of the model (they would raise peak memory)
            return torch.optim.AdamW(trainable, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            return torch.optim.AdamW(trainable, foreach=False, **kwargs)

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
        return [self._decode(group) for group in ids]

    def _decode(self, group: list[list[int]]) -> list[str]:
        return list(self.tokenizer.batch_decode(group, skip_special_tokens=True))

    def generate_token_ids(self, prompt_ids: Sequence[Sequence[int]], num_generations: int | None = None,
                           greedy: bool = False) -> list[list[list[int]]]:
        """Completion token ids per prompt per generation, each ending at (and including) its first EOS."""
        import torch

        g = self.params.num_generations if num_generations is None else num_generations
        if g < 1:
            raise ValueError(f"num_generations must be >= 1, got {g}")
        if greedy and g > 1:  # greedy copies are identical: decode one, repeat it
            once = self.generate_token_ids(prompt_ids, 1, greedy=True)
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
        bar = self._bar(total=len(prompt_ids) * g, desc="generate", unit="seq")
        try:
            with torch.inference_mode():
                lean = self._lean_step()
                for chunk in chunks:
                    seqs = self._decode_chunk([list(prompt_ids[i]) for i, _ in chunk], [n for _, n in chunk], greedy,
                                              lean)
                    k = 0
                    for i, n in chunk:
                        out[i].extend(seqs[k:k + n])
                        k += n
                    bar.update(len(seqs))
        finally:
            bar.close()
            self.model.train(was_training)
        return out

    def _bar(self, total: int, desc: str, unit: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress, leave=False)

    def _sample(self, logits: torch.Tensor, greedy: bool) -> torch.Tensor:
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

    def _lean_step(self) -> Any:
        """A LlamaDecodeStep over the current weights, or None to decode with the model's forward."""
        import torch

        if not self.lean_decode or self.device.type != "cpu":
            return None
        if next(self.model.parameters()).dtype != torch.float32:
            return None  # its norms would round differently from the model's in half precision
        from hivemind_exp.trainer.lean_decode import LlamaDecodeStep

        return LlamaDecodeStep.build(self.model)

    def _decode_chunk(self, prompts: list[list[int]], repeats: list[int], greedy: bool,
                      lean: Any = None) -> list[list[int]]:
        """Pre-fill each distinct prompt once, copy its cache `repeats[i]` times, sample until EOS or the limit."""
        import torch
        from transformers import StaticCache

        dev = self.device
        n_prompts = len(prompts)
        width = max(len(p) for p in prompts)
        new = self.params.max_completion_length
        kv_len = width + new
        ids = torch.full((n_prompts, width), self.pad_id, dtype=torch.long)
        key_ok = torch.zeros((n_prompts, kv_len), dtype=torch.bool)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            key_ok[r, width - len(p):width] = True
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        ids, key_ok = ids.to(dev), key_ok.to(dev)
        positions = (key_ok[:, :width].long().cumsum(-1) - 1).clamp(min=0)
        cache = StaticCache(config=self.model.config, max_cache_len=kv_len)
        self._use_best_threads("train")  # a pre-fill is bulk work like a training micro-batch
        hidden = self._backbone(self.backbone, ids, _prefill_mask(key_ok, width), positions, cache)
        logits = self._head_logits(hidden[:, -1])

        rep = torch.tensor(repeats, dtype=torch.long, device=dev)
        if any(r != 1 for r in repeats):
            for layer in cache.layers:
                layer.keys = layer.keys.repeat_interleave(rep, dim=0)
                layer.values = layer.values.repeat_interleave(rep, dim=0)
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
            self._check_stop("generation")
            threads = tuner.choose() if tuner else 0
            tick = time.perf_counter()
            token = self._sample(logits, greedy).cpu()
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
                for layer in cache.layers:
                    layer.keys = layer.keys.index_select(0, keep_dev)
                    layer.values = layer.values.index_select(0, keep_dev)
                key_ok, next_pos = key_ok.index_select(0, keep_dev), next_pos.index_select(0, keep_dev)
                row_id, token, done = row_id[keep], token[keep], done[keep]
            key_ok[:, width + t] = True
            if lean is not None:
                logits = self._head_logits(lean(token.to(dev), next_pos, key_ok, width + t, cache))
            else:
                hidden = self._backbone(self.backbone, token.to(dev)[:, None], key_ok[:, None, None, :],
                                        next_pos[:, None], cache)
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

    def _use_best_threads(self, kind: str) -> None:
        tuner = self.tuners.get(kind)
        if tuner is not None:
            import torch

            best = tuner.best()
            if torch.get_num_threads() != best:
                torch.set_num_threads(best)

    def _backbone(self, backbone: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                  cache: Any) -> torch.Tensor:
        kwargs = {self._cache_kwarg: cache, "use_cache": cache is not None}
        return backbone(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs).last_hidden_state

    # ------------------------------------------------------------------ training

    def step(self, prompts: Sequence[Any], reward_fn: RewardFn) -> StepResult:
        """Generate `num_generations` completions per prompt, score them, apply one policy update."""
        started = time.perf_counter()
        prompt_ids = self.encode_prompts(prompts)
        completion_ids = self.generate_token_ids(prompt_ids)
        gen_seconds = time.perf_counter() - started

        texts = [self._decode(group) for group in completion_ids]
        rewards = [self._call_reward(reward_fn, i, group) for i, group in enumerate(texts)]

        train_started = time.perf_counter()
        loss, grad_norm, skipped = self.train_on(prompt_ids, completion_ids, rewards)
        train_seconds = time.perf_counter() - train_started
        tokens = sum(len(c) for group in completion_ids for c in group)
        flat = [r for group in rewards for r in group]
        return StepResult(
            completions=texts, rewards=rewards, loss=loss, mean_reward=sum(flat) / len(flat),
            completion_tokens=tokens, gen_seconds=gen_seconds, train_seconds=train_seconds,
            tokens_per_second=tokens / max(gen_seconds + train_seconds, 1e-9), grad_norm=grad_norm,
            skipped_groups=skipped, completion_ids=completion_ids,
        )

    def _call_reward(self, reward_fn: RewardFn, index: int, completions: list[str]) -> list[float]:
        got = reward_fn(index, list(completions))
        try:
            values = [float(v) for v in got]
        except (TypeError, ValueError):
            raise RewardError(f"reward_fn({index}, ...) must return a list of numbers, got {got!r:.200}") from None
        if len(values) != len(completions):
            raise RewardError(f"reward_fn({index}, ...) returned {len(values)} rewards for {len(completions)} completions")
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise RewardError(f"reward_fn({index}, ...) returned non-finite rewards {bad}; return finite numbers")
        return values

    def train_on(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[Sequence[int]]],
                 rewards: Sequence[Sequence[float]]) -> tuple[float, float, int]:
        """One policy update from scored groups. Returns (loss, pre-clip grad norm, groups skipped)."""
        import torch

        if not (len(prompt_ids) == len(completion_ids) == len(rewards)):
            raise ValueError("prompt_ids, completion_ids and rewards must have one entry per prompt")
        for i, (group, scores) in enumerate(zip(completion_ids, rewards)):
            if len(group) != len(scores):
                raise ValueError(f"prompt {i}: {len(group)} completions but {len(scores)} rewards")
        advantages = group_advantages(rewards)
        weights = self._token_weights(completion_ids)
        skip_flat = self.params.beta == 0.0
        groups: list[tuple[int, list[int]]] = []
        skipped = 0
        for i, group in enumerate(completion_ids):
            members = [j for j in range(len(group)) if len(group[j]) > 0]
            if skip_flat and all(a == 0.0 for a in advantages[i]):
                skipped += 1  # zero advantage, no KL: exactly zero gradient, nothing to run
                continue
            if members:
                groups.append((i, members))
        batches = self._plan(groups, prompt_ids, completion_ids, advantages, weights)

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        _attach_flat_grads(params)
        total = 0.0
        bar = self._bar(total=len(batches), desc="train", unit="micro-batch")
        try:
            tuner = self.tuners.get("train")
            for mb in batches:
                self._check_stop("the policy update")
                threads = tuner.choose() if tuner else 0
                tick = time.perf_counter()
                links: list[tuple[torch.Tensor, torch.Tensor]] = []
                loss = self._micro_batch_loss(mb, links)
                loss.backward()
                _backward_prompt_pass(links)
                total += float(loss.detach())
                if tuner:
                    tuner.record(threads, time.perf_counter() - tick,
                                 sum(map(len, mb.prompts)) + sum(map(len, mb.completions)))
                bar.update(1)
        except StepInterrupted:
            self.optimizer.zero_grad(set_to_none=True)  # the partial gradient must not leak into a later step
            raise
        finally:
            bar.close()
        self._use_best_threads("train")
        # Every parameter has a (zeroed) gradient even when nothing was informative: TRL steps the
        # optimizer then too, and Adam's moments must decay the same way here.
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.params.max_grad_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"non-finite gradient norm ({grad_norm}); update skipped. Lower learning_rate "
                                     "or check the reward function for extreme values.")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_done += 1
        if self.device.type == "cpu":
            _return_free_memory()
        return total, grad_norm, skipped

    def _token_weights(self, completion_ids: Sequence[Sequence[Sequence[int]]]) -> list[list[float]]:
        """Per-token loss weight of each completion: TRL's normaliser for the whole generation batch."""
        lengths = [[len(c) for c in group] for group in completion_ids]
        n_seqs = sum(len(g) for g in lengths)
        n_tokens = max(1, sum(sum(g) for g in lengths))
        if self.params.loss_type == "dapo":  # mean over every completion token of the batch
            return [[1.0 / n_tokens for _ in g] for g in lengths]
        if self.params.loss_type == "grpo":  # mean over sequences of each sequence's token mean
            return [[1.0 / (max(1, n) * n_seqs) for n in g] for g in lengths]
        return [[1.0 / (n_seqs * self.params.max_completion_length) for _ in g] for g in lengths]  # dr_grpo

    def _plan(self, groups: list[tuple[int, list[int]]], prompt_ids: Sequence[Sequence[int]],
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
            return self._activation_bytes(len(chunk) * p_width + rows * c_len, rows * c_len)

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

    def _micro_batch_loss(self, mb: _MicroBatch,
                          prompt_links: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        import torch

        logp, seq = self.completion_logprobs(self.model, mb.prompts, mb.completions, mb.owner, prompt_links)
        adv = torch.tensor(mb.advantages, dtype=logp.dtype, device=logp.device)[seq]
        weight = torch.tensor(mb.token_weights, dtype=logp.dtype, device=logp.device)[seq]
        # One update per generation: the sampling policy is the current one, so old log-probs are
        # these log-probs, detached (ratio 1, gradient of the ratio = gradient of log p).
        ratio = torch.exp(logp - logp.detach())
        clipped = torch.clamp(ratio, 1 - self.params.epsilon, 1 + self.params.epsilon)
        per_token = -torch.minimum(ratio * adv, clipped * adv)
        if self.params.beta > 0:
            assert self.ref_model is not None
            with torch.no_grad():
                ref, _ = self.completion_logprobs(self.ref_model, mb.prompts, mb.completions, mb.owner)
            delta = ref - logp
            per_token = per_token + self.params.beta * (torch.exp(delta) - delta - 1)
        return (per_token * weight).sum()

    def completion_logprobs(self, model: Any, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                            owner: Sequence[int], prompt_links: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
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
        """
        import torch

        dev = self.device
        backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        head = model.get_output_embeddings()
        n = len(completions)
        widths = [len(c) for c in completions]
        if min(widths) < 1:
            raise ValueError("every completion needs at least one token")
        c_len = max(widths)
        comp = torch.full((n, c_len), self.pad_id, dtype=torch.long)
        comp_ok = torch.zeros((n, c_len), dtype=torch.bool)
        for r, c in enumerate(completions):
            comp[r, : len(c)] = torch.tensor(c, dtype=torch.long)
            comp_ok[r, : len(c)] = True
        comp, comp_ok = comp.to(dev), comp_ok.to(dev)
        owner_t = torch.tensor(list(owner), dtype=torch.long, device=dev)
        p_width = max(len(p) for p in prompts)
        p_ids = torch.full((len(prompts), p_width), self.pad_id, dtype=torch.long)
        p_ok = torch.zeros((len(prompts), p_width), dtype=torch.bool)
        for r, p in enumerate(prompts):
            p_ids[r, p_width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            p_ok[r, p_width - len(p):] = True
        p_ids, p_ok = p_ids.to(dev), p_ok.to(dev)
        p_len = p_ok.sum(-1)

        if model is self.model and torch.is_grad_enabled():
            tokens = len(prompts) * p_width + n * c_len  # padded: what the model actually runs
            self._set_checkpointed_layers(self._layers_to_recompute(tokens, int(comp_ok.sum())))
        prefix = _PrefixKV()
        positions = (p_ok.long().cumsum(-1) - 1).clamp(min=0)
        p_hidden = self._train_forward(backbone, p_ids, _prefill_mask(p_ok, p_width), positions, prefix)
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
            c_hidden = self._train_forward(backbone, comp[:, :-1], mask, positions, shared)
            hidden = torch.cat([first[:, None], c_hidden], dim=1)
        else:
            hidden = first[:, None]
        seq = torch.arange(n, device=dev)[:, None].expand(n, c_len)[comp_ok]
        logp = _token_logprob_function().apply(hidden[comp_ok], head.weight, head.bias, comp[comp_ok],
                                               1.0 / self.params.temperature)
        return logp, seq

    def _train_forward(self, backbone: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                       prefix: _PrefixKV) -> torch.Tensor:
        # use_cache=False: the prefix object is not a transformers cache that grows, only a
        # read-only source of the prompt's keys/values (so a recomputed layer sees the same ones).
        kwargs = {self._cache_kwarg: prefix, "use_cache": False}
        return backbone(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs).last_hidden_state

    def activation_bytes_per_token_layer(self) -> int:
        """Rough fp32 bytes one token keeps per decoder layer for the backward (measured ~55 KB for SmolLM2)."""
        cfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        hidden = self._hidden_size()
        inter = int(getattr(cfg, "intermediate_size", 4 * hidden))
        heads = int(cfg.num_attention_heads)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
        floats = 10 * hidden + 4 * inter + 2 * heads * head_dim + 4 * kv_heads * head_dim
        return floats * self._param_bytes()

    def _param_bytes(self) -> int:
        return next(self.model.parameters()).element_size()

    def _activation_bytes(self, tokens: int, completion_tokens: int) -> float:
        """Estimated memory a micro-batch keeps for its backward: every layer's activations + one
        chunk of logits (the LM head works in chunks of HEAD_CHUNK_ROWS)."""
        vocab = self.lm_head.weight.shape[0]
        return (tokens * self.activation_bytes_per_token_layer() * len(self.layers)
                + min(completion_tokens, HEAD_CHUNK_ROWS) * vocab * self._param_bytes())

    def _hidden_size(self) -> int:
        cfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        return int(cfg.hidden_size)

    def _layers_to_recompute(self, tokens: int, completion_tokens: int) -> int:
        """How many leading layers must recompute their activations to stay within activation_memory_mb."""
        n_layers = len(self.layers)
        if self.params.gradient_checkpointing:
            return n_layers
        if self.params.activation_memory_mb <= 0 or n_layers == 0:
            return 0
        per_layer = tokens * self.activation_bytes_per_token_layer()
        need = self._activation_bytes(tokens, completion_tokens)
        budget = self.params.activation_memory_mb * 2**20 - per_layer  # room for the layer being recomputed
        if need <= budget:
            return 0
        saving = per_layer - tokens * self._hidden_size() * self._param_bytes()  # a recomputed layer keeps its input
        return min(n_layers, math.ceil((need - budget) / max(saving, 1)))

    def _set_checkpointed_layers(self, count: int) -> None:
        if count == self._checkpointed:
            return
        from torch.utils.checkpoint import checkpoint

        recompute = functools.partial(checkpoint, use_reentrant=False)
        for i, layer in enumerate(self.layers):
            on = i < count
            layer.gradient_checkpointing = on
            if on:
                layer._gradient_checkpointing_func = recompute
                # our prefix only reads the cached prompt keys/values, so the replay sees the same ones
                layer._can_checkpoint_with_cache = True
        self._checkpointed = count
        log.debug("recomputing activations of %d of %d layers", count, len(self.layers))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and sampler state (everything a resumed step depends on)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "sampler_rng": self.generator.get_state(),
            "steps_done": self.steps_done,
            "params": self.params.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"engine state format {state.get('format')!r} is not {CHECKPOINT_FORMAT}; "
                             "it was written by another version of this engine")
        self.model.load_state_dict(state["model"])
        self._load_trainer_state(state)

    def _load_trainer_state(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["sampler_rng"])
        self.steps_done = int(state["steps_done"])

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write a checkpoint directory atomically: a complete new one, or the previous one untouched."""
        import torch

        target = Path(directory).expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            state = self.state_dict()
            del state["model"]  # already in model.safetensors
            torch.save(state, tmp / STATE_FILE)
            (tmp / META_FILE).write_text(json.dumps({"format": CHECKPOINT_FORMAT, "steps_done": self.steps_done,
                                                      "params": self.params.to_dict()}, indent=2))
            _fsync_dir(tmp)
            old = None
            if target.exists():
                # rename() cannot replace a non-empty directory: move the old one aside first;
                # `load` falls back to it if we die between the two renames.
                old = target.parent / f".{target.name}.old-{os.getpid()}"
                os.replace(target, old)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    @staticmethod
    def checkpoint_dir(directory: str | os.PathLike[str]) -> Path:
        """The directory to load: `directory`, or the previous copy if a save died mid-swap."""
        target = Path(directory).expanduser().resolve()
        if (target / STATE_FILE).is_file():
            return target
        olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in olds:
            if (old / STATE_FILE).is_file():
                return old
        raise FileNotFoundError(f"No GRPO checkpoint at {target} (expected {STATE_FILE} there); "
                                "start without --resume or point at a directory written by GRPOEngine.save")

    def restore(self, directory: str | os.PathLike[str]) -> None:
        """Load a checkpoint written by `save` into this engine (same model architecture)."""
        import torch
        from safetensors.torch import load_file

        source = self.checkpoint_dir(directory)
        weights = load_file(str(source / "model.safetensors"), device=str(self.device))
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or ())
        missing = [m for m in missing if m not in tied]
        if missing or unexpected:
            raise ValueError(f"checkpoint {source} does not fit this model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        if tied and hasattr(self.model, "tie_weights"):
            self.model.tie_weights()
        state = torch.load(source / STATE_FILE, map_location=self.device, weights_only=True)
        self._load_trainer_state(state)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], params: GRPOParams | None = None, device: str = "cpu",
             progress: bool = False) -> GRPOEngine:
        """A new engine from a checkpoint written by `save` (its own params unless `params` is given)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = cls.checkpoint_dir(directory)
        state = torch.load(source / STATE_FILE, map_location=device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint {source} has format {state.get('format')!r}, this engine reads {CHECKPOINT_FORMAT}")
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(source), padding_side="left")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        engine = cls(model, tokenizer, params or GRPOParams(**state["params"]), device=device, progress=progress)
        engine._load_trainer_state(state)
        return engine


class _PrefixKV:
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

    def expanded(self, rows: Any) -> _PrefixKV:
        """A continuing prefix whose row i is recorded row rows[i]."""
        return _PrefixKV({i: k.index_select(0, rows) for i, k in self.keys.items()},
                         {i: v.index_select(0, rows) for i, v in self.values.items()})


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


def _continuation_mask(key_ok: torch.Tensor, offset: int, q_len: int) -> torch.Tensor:
    """[B, 1, q_len, offset+q_len] mask for queries at positions offset.. following a cached prefix."""
    import torch

    dev = key_ok.device
    q = torch.arange(q_len, device=dev)[:, None] + offset
    k = torch.arange(key_ok.shape[1], device=dev)[None, :]
    return ((k <= q) & key_ok[:, None, :])[:, None]


def _link(tensor: torch.Tensor, links: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """A leaf copy of `tensor` (same storage) that collects the gradient for a later pass; see
    `GRPOEngine.completion_logprobs`."""
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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
