"""GRPO parameters and their validation, what one step reports, and the engine's errors.

- ``GRPOParams``: sizes and hyper-parameters of one step (the profile's ``grpo:`` mapping);
  every field is checked at construction, and ``GRPOParamsError`` names each bad one with a fix.
- ``StepResult``: what ``GRPOEngine.step`` did (completions, rewards, loss, timings).
- ``StepInterrupted`` (``should_stop`` ended a step; nothing was applied) and ``RewardError``
  (the reward function returned something that cannot be trained on).

Pure Python: importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RewardFn = Callable[[int, list[str]], Sequence[float]]

LOSS_TYPES = ("dapo", "grpo", "dr_grpo")


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
    # SmolLM2 step under 3 GB peak RSS (2.91 GB) at the speed of 1024, within the run-to-run
    # noise (README, Results: 27.4-29.6 vs 28.5 tokens/s, 3.36 GB; bench/grpo_step.py).
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
