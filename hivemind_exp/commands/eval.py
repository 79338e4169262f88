"""`rl-swarm eval`: accuracy of a checkpoint on GSM8K-format problems.

    rl-swarm eval --model PATH_OR_ID --dataset-path FILE.jsonl --limit 200 [--json]
    rl-swarm eval --model PATH_OR_ID --generated-templates 9,10,11 --limit 100

Greedy answers with the trainer's stage-1 prompt (see `hivemind_exp.game.evaluation`).
Exit codes: 0 done, 2 bad settings or dataset, 1 the model could not be loaded or run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from hivemind_exp.common.settings_base import ServiceSettings, SettingsError, add_settings_arguments, load_settings, overrides_from_args

# Problems drawn from the built-in generator when --limit is not given.
GENERATED_DEFAULT = 500
# The node's generator size (data.GeneratedSource default): --held-out must split the same set.
NODE_GENERATED_SIZE = 5000


class EvalSettings(ServiceSettings):
    """`rl-swarm eval`: which checkpoint, which problems, how to decode."""

    model: str = Field("embedded", description="checkpoint to evaluate: 'embedded' (SmolLM2-135M), a checkpoint "
                       "directory the trainer wrote (config.json + safetensors + tokenizer), or a Hugging Face id")
    dataset_path: Path | None = Field(None, description="GSM8K-format JSONL ({question, answer: '... #### 42'}); "
                                      "without it the built-in problem generator is used")
    generated_templates: Annotated[list[int] | None, NoDecode] = Field(
        None, description="generator template indices to draw problems from when no --dataset-path is given, "
        "comma-separated (e.g. 9,10,11 for templates held out of training) [default: all]")
    limit: int | None = Field(None, ge=1, description=f"evaluate only the first N problems (file order) [default: the "
                              f"whole file, or {GENERATED_DEFAULT} generated problems]")
    held_out: float | None = Field(None, gt=0, description="evaluate only the held-out part of the dataset, as the "
                                   "node splits it with the same --seed: a fraction in (0, 1) or a number of problems")
    seed: int = Field(0, description="seed of the problem generator and of the held-out split (the swarm seed)")
    batch_size: int = Field(16, ge=1, le=4096, description="problems decoded together; lower it if memory runs out")
    max_new_tokens: int = Field(256, ge=1, le=32768, description="longest completion, in tokens")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="where to run: auto, cpu, cuda or mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype: auto (bfloat16 on cuda, else float32), float32, bfloat16 or float16")
    as_json: bool = Field(False, description="print one JSON object on stdout instead of a table")
    save_records: Path | None = Field(None, description="also write one JSON line per problem (completion, "
                                      "predicted answer, correctness) to this file")
    progress: bool = Field(True, description="show a progress bar on stderr")

    @field_validator("generated_templates", mode="before")
    @classmethod
    def _split_templates(cls, v: Any) -> Any:
        # Flags arrive as ["9,10", "11"] (the flag may repeat), env as "9,10,11".
        if v is None:
            return None
        items = [v] if isinstance(v, (str, int)) else list(v)
        parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
        if parts == ["all"]:
            return None
        bad = [p for p in parts if not p.lstrip("-").isdigit()]
        if bad or not parts:
            raise ValueError(f"expected comma-separated template numbers such as 0,3,7 (or 'all'), got {v!r}")
        return [int(p) for p in parts]

    @field_validator("generated_templates")
    @classmethod
    def _templates_exist(cls, v: list[int] | None) -> list[int] | None:
        from hivemind_exp.game.data import TEMPLATES

        if v is not None:
            wrong = [t for t in v if not 0 <= t < len(TEMPLATES)]
            if wrong:
                raise ValueError(f"template(s) {wrong} do not exist; the generator has templates 0..{len(TEMPLATES) - 1}")
        return v

    @field_validator("held_out")
    @classmethod
    def _held_out_shape(cls, v: float | None) -> float | None:
        if v is not None and v >= 1 and v != int(v):
            raise ValueError("give a fraction below 1 (e.g. 0.05) or a whole number of problems (e.g. 200)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> EvalSettings:
        if self.dataset_path is not None and self.generated_templates is not None:
            raise ValueError("--dataset-path and --generated-templates both given: pick one problem source")
        return self

    def held_out_size(self) -> float | int | None:
        """--held-out as held_out_split wants it: int = count, float = fraction."""
        if self.held_out is None:
            return None
        return int(self.held_out) if self.held_out >= 1 else float(self.held_out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, EvalSettings, skip=("as_json",))
    # `json` cannot be a field name (it shadows a pydantic method), so the flag maps onto as_json.
    parser.add_argument("--json", dest="as_json", action="store_true", default=None,
                        help="print one JSON object on stdout instead of a table")


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else 'no message'}"


def load_problems(settings: EvalSettings) -> tuple[list[Any], str]:
    """The problems to evaluate and a description of where they came from (raises DatasetError)."""
    from hivemind_exp.game.data import GeneratedSource, JsonlSource
    from hivemind_exp.game.evaluation import held_out_split

    held_out = settings.held_out_size()
    if settings.dataset_path is not None:
        # Without a split, stop reading the file after --limit problems.
        source: Any = JsonlSource(settings.dataset_path, limit=settings.limit if held_out is None else None)
        where = f"{settings.dataset_path}"
    else:
        size = NODE_GENERATED_SIZE if held_out is not None else (settings.limit or GENERATED_DEFAULT)
        source = GeneratedSource(seed=settings.seed, size=max(size, settings.limit or 0),
                                 templates=settings.generated_templates)
        chosen = "all" if settings.generated_templates is None else ",".join(map(str, settings.generated_templates))
        where = f"generated (seed {settings.seed}, templates {chosen})"
    problems = list(source.problems())
    if held_out is not None:
        from hivemind_exp.game.data import DatasetError

        try:
            _, problems = held_out_split(problems, held_out, seed=settings.seed)
        except (ValueError, TypeError) as err:
            raise DatasetError(f"--held-out {settings.held_out}: {err}") from None
        where += f", held-out {settings.held_out} (seed {settings.seed})"
    if settings.limit is not None:
        problems = problems[: settings.limit]
    return problems, where


def _resolve_device(requested: str) -> str:
    from hivemind_exp.trainer.profiles import detect_device

    device = detect_device(requested)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda but torch sees no CUDA GPU; use --device cpu (or auto)")
    return device


def run(args: argparse.Namespace) -> int:
    from hivemind_exp.game.data import DatasetError
    from hivemind_exp.trainer.model_source import ModelSourceError

    try:
        settings = load_settings(EvalSettings, **overrides_from_args(args, EvalSettings))
    except SettingsError as err:
        print(err.message, file=sys.stderr)
        return 2
    try:
        problems, where = load_problems(settings)
    except DatasetError as err:
        return _fail(str(err), 2)
    from hivemind_exp.trainer.model_source import is_embedded, resolve_model

    if not is_embedded(settings.model):
        try:
            resolve_model(settings.model)  # a wrong path fails here, before torch loads (seconds)
        except ModelSourceError as err:
            return _fail(str(err).replace("\n", " "), 1)
    try:
        device = _resolve_device(settings.device)
    except ValueError as err:
        return _fail(str(err), 2)
    dtype = settings.dtype if settings.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")

    import torch

    from hivemind_exp.game.evaluation import evaluate
    from hivemind_exp.trainer.model_source import load_model_and_tokenizer

    torch.manual_seed(settings.seed)
    try:
        model, tokenizer = load_model_and_tokenizer(settings.model, dtype=dtype, device=device,
                                                    progress=settings.progress)
    except ModelSourceError as err:
        return _fail(str(err).replace("\n", " "), 1)
    except Exception as err:  # noqa: BLE001 - a broken checkpoint fails in many library-specific ways
        return _fail(f"could not load model {settings.model!r} ({_first_line(err)}); is it a complete checkpoint "
                     "directory (config.json, *.safetensors, tokenizer files)?", 1)
    try:
        result = evaluate(model, tokenizer, problems, batch_size=settings.batch_size,
                          max_new_tokens=settings.max_new_tokens, progress=settings.progress,
                          keep_records=settings.save_records is not None)
    except torch.OutOfMemoryError:
        return _fail(f"out of memory on {device} at --batch-size {settings.batch_size}; lower --batch-size "
                     "or --max-new-tokens", 1)
    except Exception as err:  # noqa: BLE001 - name the cause in one line instead of a traceback
        return _fail(f"evaluation of {settings.model!r} failed: {_first_line(err)}", 1)

    if settings.save_records is not None:
        try:
            path = Path(settings.save_records).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8") as fh:
                for record in result.to_dict(include_records=True)["records"]:
                    fh.write(json.dumps(record) + "\n")
        except OSError as err:
            return _fail(f"cannot write --save-records {settings.save_records}: {err.strerror or err}", 1)

    summary = {
        "model": settings.model,
        "dataset": where,
        **result.to_dict(),
        "batch_size": settings.batch_size,
        "max_new_tokens": settings.max_new_tokens,
        "device": device,
        "dtype": dtype,
        "seed": settings.seed,
    }
    if settings.as_json:
        print(json.dumps(summary))
    else:
        _print_table(summary)
    return 0


def _print_table(s: dict[str, Any]) -> None:
    n = s["n"]
    rate = n / s["seconds"] if s["seconds"] > 0 else 0.0
    rows = [
        ("model", s["model"]),
        ("problems", f"{n} from {s['dataset']}"),
        ("accuracy", f"{s['accuracy']:.3f} ({round(s['accuracy'] * n)}/{n})"),
        ("format rate", f"{s['format_rate']:.3f} (mean format score {s['mean_format_score']:.3f})"),
        ("mean completion", f"{s['mean_completion_tokens']:.1f} tokens ({s['truncated_rate']:.1%} hit "
                            f"--max-new-tokens {s['max_new_tokens']})"),
        ("time", f"{s['seconds']:.1f} s ({rate:.2f} problems/s, {s['device']} {s['dtype']}, batch {s['batch_size']})"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
