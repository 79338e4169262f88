"""Checkpoints of a `GRPOEngine`: a Hugging Face model directory plus the optimizer and sampler state.

A checkpoint directory holds `model.safetensors` + config (`save_pretrained`), the tokenizer,
`STATE_FILE` (optimizer state, sampler RNG, steps done, params; torch.save) and `META_FILE`
(format, steps, params as JSON for people and tools). `save` writes a complete new directory and
swaps it in, so a crash leaves either the new checkpoint or the previous one; `checkpoint_dir`
finds the previous copy when a save died between its two renames.

The engine's `state_dict`, `load_state_dict`, `save`, `restore`, `load` and `checkpoint_dir`
call these functions. torch, safetensors and transformers are imported inside them.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hivemind_exp.trainer import hf_internals as hf
from hivemind_exp.trainer.params import GRPOParams

if TYPE_CHECKING:
    from hivemind_exp.trainer.grpo import GRPOEngine

STATE_FILE = "trainer_state.pt"
META_FILE = "engine.json"
CHECKPOINT_FORMAT = 1


def state_dict(engine: GRPOEngine) -> dict[str, Any]:
    """Model, optimizer and sampler state (everything a resumed step depends on)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().clone() for k, v in engine.model.state_dict().items()},
        "optimizer": copy.deepcopy(engine.optimizer.state_dict()),
        "sampler_rng": engine.generator.get_state(),
        "steps_done": engine.steps_done,
        "params": engine.params.to_dict(),
    }


def load_state_dict(engine: GRPOEngine, state: Mapping[str, Any]) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"engine state format {state.get('format')!r} is not {CHECKPOINT_FORMAT}; "
                         "it was written by another version of this engine")
    engine.model.load_state_dict(state["model"])
    load_trainer_state(engine, state)


def load_trainer_state(engine: GRPOEngine, state: Mapping[str, Any]) -> None:
    """Optimizer, sampler RNG and step count (not the weights)."""
    engine.optimizer.load_state_dict(state["optimizer"])
    engine.generator.set_state(state["sampler_rng"])
    engine.steps_done = int(state["steps_done"])


def save(engine: GRPOEngine, directory: str | os.PathLike[str]) -> Path:
    """Write a checkpoint directory atomically: a complete new one, or the previous one untouched."""
    import torch

    target = Path(directory).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        engine.model.save_pretrained(tmp, safe_serialization=True)
        engine.tokenizer.save_pretrained(tmp)
        state = state_dict(engine)
        del state["model"]  # already in model.safetensors
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps({"format": CHECKPOINT_FORMAT, "steps_done": engine.steps_done,
                                                  "params": engine.params.to_dict()}, indent=2))
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


def restore(engine: GRPOEngine, directory: str | os.PathLike[str]) -> None:
    """Load a checkpoint written by `save` into this engine (same model architecture)."""
    import torch
    from safetensors.torch import load_file

    source = checkpoint_dir(directory)
    weights = load_file(str(source / "model.safetensors"), device=str(engine.device))
    missing, unexpected = engine.model.load_state_dict(weights, strict=False)
    tied = hf.tied_weight_keys(engine.model)
    missing = [m for m in missing if m not in tied]
    if missing or unexpected:
        raise ValueError(f"checkpoint {source} does not fit this model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    if tied and hasattr(engine.model, "tie_weights"):
        engine.model.tie_weights()
    state = torch.load(source / STATE_FILE, map_location=engine.device, weights_only=True)
    load_trainer_state(engine, state)


def load(cls: type[GRPOEngine], directory: str | os.PathLike[str], params: GRPOParams | None = None,
         device: str = "cpu", progress: bool = False) -> GRPOEngine:
    """A new engine from a checkpoint written by `save` (its own params unless `params` is given)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = checkpoint_dir(directory)
    state = torch.load(source / STATE_FILE, map_location=device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {source} has format {state.get('format')!r}, this engine reads {CHECKPOINT_FORMAT}")
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(source), padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    engine = cls(model, tokenizer, params or GRPOParams(**state["params"]), device=device, progress=progress)
    load_trainer_state(engine, state)
    return engine


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
