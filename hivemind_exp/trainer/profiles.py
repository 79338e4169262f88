"""Device profiles: per-hardware, per-model training sizes kept as YAML.

`configs/<device>/<file>.yaml` with device in cpu / mac (MPS) / gpu (CUDA). The device is
detected from the hardware (honouring CUDA_VISIBLE_DEVICES, which torch reads) unless
given; the file is picked by model, or given outright with --config.
`configs/sapo/*.yaml` are ReasoningGym task mixes (hivemind_exp/sapo/tasks.py) that a
profile names in `task_mix`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"
DEVICE_DIRS = {"cpu": "cpu", "mps": "mac", "cuda": "gpu"}
MIX_DIR = "sapo"  # configs/sapo/*.yaml: ReasoningGym task mixes, not device profiles
DEFAULT_TASK_MIX = f"{MIX_DIR}/default_mix.yaml"


class ProfileError(ValueError):
    pass


class GRPOSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_generations: int = Field(4, ge=2, description="completions per prompt (the GRPO group); needs >= 2")
    max_prompt_length: int = Field(768, ge=32)
    max_completion_length: int = Field(96, ge=8)
    temperature: float = Field(0.9, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    learning_rate: float = Field(5e-6, gt=0, lt=1)
    beta: float = Field(0.0, ge=0)
    micro_batch_size: int = Field(8, ge=1)
    generation_batch_size: int = Field(16, ge=1)
    gradient_checkpointing: bool = False


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    questions_per_round: int = Field(2, ge=1, le=256)
    grpo: GRPOSection = GRPOSection()
    # One shared file instead of a copy per profile; a profile for a bigger model can point
    # at a harder mix.
    task_mix: str = Field(
        DEFAULT_TASK_MIX,
        description="ReasoningGym task mix of the SAPO game: a YAML file, relative to hivemind_exp/configs/ or absolute",
    )

    def task_mix_file(self) -> Path:
        """The task mix file this profile names (not checked for existence here)."""
        path = Path(self.task_mix).expanduser()
        return path if path.is_absolute() else CONFIG_ROOT / path

    @field_validator("model")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model must not be empty")
        return v


def detect_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def profile_files(device: str) -> list[Path]:
    return sorted((CONFIG_ROOT / DEVICE_DIRS[device]).glob("*.yaml"))


def load_profile(path: Path) -> Profile:
    try:
        raw: Any = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ProfileError(f"Config file {path} does not exist (--config / RLSWARM_CONFIG).") from None
    except yaml.YAMLError as err:
        raise ProfileError(f"Config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"Config file {path} must be a YAML mapping")
    try:
        return Profile.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ProfileError(f"Config file {path} is invalid: {problems}") from None


def _model_key(model: str) -> str:
    from hivemind_exp.trainer.model_source import is_embedded

    return "embedded" if is_embedded(model) else model.rstrip("/").lower()


def choose_profile(model: str, device: str, config: Path | None = None) -> tuple[Path, Profile]:
    """The --config file if given; else the device's file for this model; else the device's SmolLM2 file."""
    if config is not None:
        return Path(config), load_profile(Path(config))
    files = profile_files(device)
    key = _model_key(model)
    fallback = None
    for f in files:
        prof = load_profile(f)
        if _model_key(prof.model) == key or Path(key).name == _model_key(prof.model).split("/")[-1]:
            return f, prof
        if _model_key(prof.model) == "embedded":
            fallback = (f, prof)
    if fallback is None:
        raise ProfileError(f"No profile in {CONFIG_ROOT / DEVICE_DIRS[device]}; pass --config FILE.yaml")
    return fallback


def apply_device_env(device: str) -> None:
    """Environment knobs that must be set before torch allocates on the device."""
    if device == "mps":
        os.environ.setdefault("PYTORCH_MPS_HIGH_WATERMARK_RATIO", "0.0")
