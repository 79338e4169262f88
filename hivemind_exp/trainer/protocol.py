"""What the node and the SAPO player need from a training engine (`grpo.GRPOEngine` is the one).

Typed here so the node can be handed any engine, e.g. one on a tiny model in unit tests,
without importing torch to say what an engine is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TrainingEngine(Protocol):
    tokenizer: Any
    params: Any  # GRPOParams
    should_stop: Callable[[], bool] | None

    def step(self, prompts: Sequence[Any], reward_fn: Callable[[int, list[str]], Sequence[float]]) -> Any:
        """Generate a group per prompt, score it with `reward_fn(prompt_index, completions)`, train once."""
        ...

    def encode_prompts(self, prompts: Sequence[Any]) -> list[list[int]]: ...

    def generate_token_ids(self, prompt_ids: Sequence[Sequence[int]], num_generations: int | None = None,
                           greedy: bool = False) -> list[list[list[int]]]: ...

    def train_on(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[Sequence[int]]],
                 rewards: Sequence[Sequence[float]]) -> Any: ...

    def save(self, directory: str | os.PathLike[str]) -> Path: ...

    def restore(self, directory: str | os.PathLike[str]) -> None: ...
