"""The GRPO step of a swarm node: sample a group of completions per prompt, score them, one policy update.

Why not `trl.GRPOTrainer`: a node needs a step it can interrupt, checkpoint and feed with
groups from other peers, in a bounded amount of memory, and it should be faster. On the 2-core
CPU machine this engine runs 1.1x stock TRL 1.16 at 4 prompts x 2 completions and 1.3x at the
SAPO game's 4 x 8, and 1.7x / 3.3x genrl 0.3.0 (README, Results; `bench/grpo_step.py` measures
them side by side). The objective is TRL's
(group-normalised advantages with TRL's `nanstd`, its clipped-ratio per-token loss, its `dapo` /
`grpo` / `dr_grpo` normalisers, the k3 KL estimate when `beta > 0`); the work done to get there is not:

- Generation (`sampling.Sampler`): one pre-fill per *distinct* prompt, its KV cache copied to the
  group's rows, then a decode loop over a pre-allocated (static) cache with our own masks; rows
  that reached EOS are dropped from the batch as they finish, so a long straggler does not drag
  the whole batch along. fp32 Llama-architecture models on CPU run each decode step through
  `lean_decode` (the model's arithmetic without its per-module overhead).
- Training (`logprobs`): with one update per generation the old log-probs equal the current ones,
  so they are never recomputed (`ratio = exp(logp - logp.detach())`). The prompt goes through the
  model once per group (its keys/values, with their gradient, are shared by the group's
  completions), the LM head is applied only to completion positions, in chunks of 256 rows whose
  logits the backward recomputes and turns into the gradient in place. Micro-batches are whole
  groups sorted by length (little padding). Groups whose rewards are all equal have zero
  advantage and, without a KL term, zero gradient: they are counted in the loss normaliser (as
  TRL does) but not run through the model.
- Memory (`memory`): no gradient checkpointing by default. Micro-batches are packed only up to
  `activation_memory_mb`; a group too big for it alone recomputes just enough of its first layers
  in the backward (the prompt keys/values are read-only then, so the replay is exact). No
  reference model unless `beta > 0`. The backward runs in two passes (completions, then the
  prompts they share) so each weight gradient is added into one flat per-step buffer as soon as
  it exists. Peak RSS for SmolLM2 (params + AdamW + gradients = 2.2 GB of it): 2.91 GB at the
  default 256 MB budget, 3.36 GB at 1024 MB (a little less recompute).
- Threads (`threads`): the CPUs this process may use (affinity, cgroup quota). With
  `num_threads=0` a `ThreadTuner` times 1 thread against all of them for decode steps and for
  micro-batches, since on a machine other processes also use, OpenMP threads spinning at
  barriers can make 2 threads several times slower than 1.

`GRPOEngine.save` / `load` write a Hugging Face checkpoint (model + tokenizer) plus the optimizer
and sampler state, atomically (`checkpoint`). Parameters, results and errors live in `params`;
every use of transformers internals in `hf_internals`. The names other code imports from here
(`GRPOEngine`, `GRPOParams`, `GRPOParamsError`, `StepInterrupted`, `RewardError`, `StepResult`,
`group_advantages`, ...) keep working.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hivemind_exp.trainer import checkpoint, logprobs
from hivemind_exp.trainer import hf_internals as hf
from hivemind_exp.trainer.checkpoint import CHECKPOINT_FORMAT, META_FILE, STATE_FILE
from hivemind_exp.trainer.logprobs import HEAD_CHUNK_ROWS, _backward_prompt_pass, _token_logprob_function
from hivemind_exp.trainer.memory import (
    MemoryPlanner,
    _attach_flat_grads,
    _MicroBatch,
    _malloc_trim,
    _return_free_memory,
    limit_heap_retention,
)
from hivemind_exp.trainer.params import (
    LOSS_TYPES,
    GRPOParams,
    GRPOParamsError,
    RewardError,
    RewardFn,
    StepInterrupted,
    StepResult,
)
from hivemind_exp.trainer.sampling import Sampler, progress_bar
from hivemind_exp.trainer.threads import ThreadTuner, configure_torch_threads

if TYPE_CHECKING:
    import torch

__all__ = [
    "GRPOEngine", "group_advantages",
    # defined in params / checkpoint / logprobs / memory; importable from here as before the split
    "GRPOParams", "GRPOParamsError", "LOSS_TYPES", "RewardError", "RewardFn", "StepInterrupted", "StepResult",
    "CHECKPOINT_FORMAT", "META_FILE", "STATE_FILE", "HEAD_CHUNK_ROWS", "_token_logprob_function",
    "_backward_prompt_pass", "_MicroBatch", "_attach_flat_grads", "_malloc_trim", "_return_free_memory",
]


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
    """Generation and GRPO updates for one policy model (see the module docstring for the design).

    Owns a `Sampler` (`self.sampler`, generation), a `MemoryPlanner` (`self.memory`, micro-batches
    and recompute) and the AdamW optimizer; all three read the same `GRPOParams` object.
    """

    def __init__(self, model: Any, tokenizer: Any, params: GRPOParams | None = None, device: str = "cpu",
                 progress: bool = False):
        import torch

        params = params if params is not None else GRPOParams()
        if not isinstance(params, GRPOParams):
            raise TypeError(f"params must be a GRPOParams, got {type(params).__name__}")
        self._params = params
        self.device = torch.device(device)
        self.num_threads = configure_torch_threads(params.num_threads) if self.device.type == "cpu" else 0
        if self.device.type == "cpu":
            limit_heap_retention()  # freed KV caches and activations must not pile up on the heap
        # num_threads=0 on CPU: pick 1 thread or all by timing (see ThreadTuner), separately for
        # decode steps (small matmuls, most sensitive to contention) and training micro-batches.
        auto = self.device.type == "cpu" and params.num_threads == 0 and self.num_threads > 1
        self.tuners: dict[str, ThreadTuner] = (
            {"decode": ThreadTuner(self.num_threads, reprobe_every=32), "train": ThreadTuner(self.num_threads, 6)}
            if auto else {}
        )
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        # Polled between decode steps and micro-batches, so Ctrl-C ends a minutes-long CPU
        # step within about one decode step instead of after it (see StepInterrupted).
        self.should_stop: Callable[[], bool] | None = None
        self.sampler = Sampler(self.model, tokenizer, params, self.device, progress=progress, tuners=self.tuners,
                               check_stop=self._check_stop)
        self.eos_ids = self.sampler.eos_ids
        self.pad_id = self.sampler.pad_id
        self.backbone = self.sampler.backbone
        self.lm_head = self.sampler.lm_head
        self.layers = hf.decoder_layers(self.backbone)
        self.memory = MemoryPlanner(self.model, self.lm_head, self.layers, params)
        self.ref_model = None
        if params.beta > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.optimizer = self._make_optimizer()
        self.steps_done = 0

    # The sampler and the memory planner share these with the engine.

    @property
    def params(self) -> GRPOParams:
        return self._params

    @params.setter
    def params(self, value: GRPOParams) -> None:
        self._params = self.sampler.params = self.memory.params = value

    @property
    def progress(self) -> bool:
        return self.sampler.progress

    @progress.setter
    def progress(self, value: bool) -> None:
        self.sampler.progress = value

    @property
    def lean_decode(self) -> bool:
        """Decode fp32 Llama models on CPU through `LlamaDecodeStep` (default True)."""
        return self.sampler.lean_decode

    @lean_decode.setter
    def lean_decode(self, value: bool) -> None:
        self.sampler.lean_decode = value

    @property
    def generator(self) -> torch.Generator:
        """The sampler's random generator (seeded from `params.seed`, saved with checkpoints)."""
        return self.sampler.generator

    @property
    def _checkpointed(self) -> int:
        return self.memory.checkpointed

    def _check_stop(self, where: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise StepInterrupted(f"GRPO step stopped during {where}; nothing was applied")

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

    # ------------------------------------------------------------------ generation (the sampler's)

    def encode_prompts(self, prompts: Sequence[Any]) -> list[list[int]]:
        """Token ids per prompt (see `Sampler.encode_prompts`)."""
        return self.sampler.encode_prompts(prompts)

    def generate(self, prompts: Sequence[Any], num_generations: int | None = None,
                 greedy: bool = False) -> list[list[str]]:
        """`num_generations` completions (text, special tokens removed) for each prompt."""
        return self.sampler.generate(prompts, num_generations, greedy)

    def generate_token_ids(self, prompt_ids: Sequence[Sequence[int]], num_generations: int | None = None,
                           greedy: bool = False, max_new_tokens: int | None = None) -> list[list[list[int]]]:
        """Completion token ids per prompt per generation, each ending at (and including) its first EOS."""
        return self.sampler.generate_token_ids(prompt_ids, num_generations, greedy, max_new_tokens)

    def _sample(self, logits: torch.Tensor, greedy: bool) -> torch.Tensor:
        return self.sampler.sample(logits, greedy)

    def _lean_step(self) -> Any:
        return self.sampler.lean_step()

    # ------------------------------------------------------------------ training

    def step(self, prompts: Sequence[Any], reward_fn: RewardFn) -> StepResult:
        """Generate `num_generations` completions per prompt, score them, apply one policy update."""
        started = time.perf_counter()
        prompt_ids = self.encode_prompts(prompts)
        completion_ids = self.generate_token_ids(prompt_ids)
        gen_seconds = time.perf_counter() - started

        texts = [self.sampler.decode(group) for group in completion_ids]
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
        batches = self.memory.plan(groups, prompt_ids, completion_ids, advantages, weights)

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        _attach_flat_grads(params)
        total = 0.0
        bar = progress_bar(total=len(batches), desc="train", unit="micro-batch", enabled=self.progress)
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
        if "train" in self.tuners:
            self.tuners["train"].apply_best()
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
        """Log-prob of every completion token given its prompt, as one flat vector (+ its completion index);
        see `logprobs.completion_logprobs`. For the policy model with autograd on, first sets how many
        layers recompute their activations (`activation_memory_mb`, `gradient_checkpointing`)."""
        return logprobs.completion_logprobs(
            model, prompts, completions, owner, pad_id=self.pad_id, temperature=self.params.temperature,
            device=self.device, cache_kwarg=self.sampler.cache_kwarg, prompt_links=prompt_links,
            before_forward=self.memory.recompute_for if model is self.model else None)

    # ------------------------------------------------------------------ memory (the planner's)

    def activation_bytes_per_token_layer(self) -> int:
        """Rough fp32 bytes one token keeps per decoder layer for the backward (see `MemoryPlanner`)."""
        return self.memory.activation_bytes_per_token_layer()

    def _layers_to_recompute(self, tokens: int, completion_tokens: int) -> int:
        return self.memory.layers_to_recompute(tokens, completion_tokens)

    # ------------------------------------------------------------------ state (see `checkpoint`)

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and sampler state (everything a resumed step depends on)."""
        return checkpoint.state_dict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        checkpoint.load_state_dict(self, state)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write a checkpoint directory atomically: a complete new one, or the previous one untouched."""
        return checkpoint.save(self, directory)

    @staticmethod
    def checkpoint_dir(directory: str | os.PathLike[str]) -> Path:
        """The directory to load: `directory`, or the previous copy if a save died mid-swap."""
        return checkpoint.checkpoint_dir(directory)

    def restore(self, directory: str | os.PathLike[str]) -> None:
        """Load a checkpoint written by `save` into this engine (same model architecture)."""
        checkpoint.restore(self, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], params: GRPOParams | None = None, device: str = "cpu",
             progress: bool = False) -> GRPOEngine:
        """A new engine from a checkpoint written by `save` (its own params unless `params` is given)."""
        return checkpoint.load(cls, directory, params, device, progress)
