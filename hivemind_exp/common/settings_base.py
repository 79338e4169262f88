"""Shared machinery for every service's typed settings.

Each service has one `pydantic_settings.BaseSettings` subclass. Values come from, in
order of priority: CLI flags, environment variables, a `.env` file, defaults.
`load_settings` turns a `ValidationError` into a message that names the bad value, where
it came from (flag / env var) and how to fix it, instead of a traceback.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)

ENV_PREFIX = "RLSWARM_"


class ServiceSettings(BaseSettings):
    """Base class: env prefix RLSWARM_, `.env` in the working directory, unknown env ignored."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )


class SettingsError(SystemExit):
    """Raised when settings do not validate. The CLI prints the message and exits with status 2;
    uncaught elsewhere it still exits (status 1) with the message instead of a traceback."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _env_names(cls: type[BaseSettings], name: str) -> list[str]:
    field = cls.model_fields[name]
    names = []
    alias = field.validation_alias
    if isinstance(alias, str):
        names.append(alias)
    elif alias is not None and hasattr(alias, "choices"):
        names.extend(str(c) for c in alias.choices)
    prefix = cls.model_config.get("env_prefix", "")
    names.append(f"{prefix}{name}".upper())
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return seen


def format_validation_error(cls: type[BaseSettings], err: ValidationError) -> str:
    lines = [f"Invalid {cls.__name__} ({len(err.errors())} problem(s)):"]
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ())]
        name = loc[0] if loc else "?"
        where = ""
        if name in cls.model_fields:
            flag = "--" + name.replace("_", "-")
            envs = " / ".join(_env_names(cls, name))
            desc = cls.model_fields[name].description or ""
            where = f" (flag {flag}, env {envs})"
            hint = f"\n    what it is: {desc}" if desc else ""
        else:
            hint = ""
        value = e.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  - {'.'.join(loc) or name}{where}: got {shown}: {e.get('msg')}{hint}")
    return "\n".join(lines)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings; flags (overrides) beat env, env beats .env, .env beats defaults."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return cls(**clean)
    except ValidationError as err:
        raise SettingsError(format_validation_error(cls, err)) from None


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    args = typing.get_args(annotation)
    return bool(args) and all(a in (bool, type(None)) for a in args)


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return True
    return any(typing.get_origin(a) in (list, tuple) for a in typing.get_args(annotation))


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[BaseSettings], skip: tuple[str, ...] = ()) -> None:
    """One `--flag` per settings field, help text from the field description.

    Values stay strings here; pydantic validates them so errors read the same whether
    a value came from a flag or from the environment.
    """
    prefix = cls.model_config.get("env_prefix", ENV_PREFIX)
    group = parser.add_argument_group(f"settings ({cls.__name__}; each also reads env {prefix}<NAME>)")
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        default = field.default
        undefined = default is None or callable(default) or type(default).__name__ == "PydanticUndefinedType"
        shown = "" if undefined else f" [default: {default}]"
        help_text = (field.description or "") + shown
        if _is_bool(field.annotation):
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif _is_list(field.annotation):
            group.add_argument(flag, dest=name, action="append", default=None, metavar="VALUE",
                               help=help_text + " (repeat the flag for several)")
        else:
            group.add_argument(flag, dest=name, default=None, metavar="VALUE", help=help_text)


def overrides_from_args(args: argparse.Namespace, cls: type[BaseSettings]) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in cls.model_fields and v is not None}
