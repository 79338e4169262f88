"""The committed compiled contract: `contracts/build/SwarmCoordinator.json`.

Built by `node contracts/compile.mjs` (solc-js); Python never compiles, it only reads this.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hivemind_exp.chain.errors import ChainConfigError
from hivemind_exp.common.paths import repo_root

ARTIFACT_RELATIVE_PATH = Path("contracts") / "build" / "SwarmCoordinator.json"


@dataclass(frozen=True)
class ContractArtifact:
    """ABI and bytecode of the logic contract and of its ERC-1967 proxy."""

    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    proxy_abi: list[dict[str, Any]]
    proxy_bytecode: str
    compiler_version: str
    source_sha256: str
    sha256: str  # of the artifact file itself: identifies what a deployment was built from
    path: Path


def artifact_path() -> Path:
    return repo_root() / ARTIFACT_RELATIVE_PATH


@functools.lru_cache(maxsize=4)
def load_artifact(path: Path | None = None) -> ContractArtifact:
    """Read the artifact (cached per path); a missing or broken file says how to rebuild it."""
    p = Path(path) if path is not None else artifact_path()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ChainConfigError(
            f"contract artifact {p} is missing; run `node contracts/compile.mjs` in the repository root"
        ) from None
    try:
        data = json.loads(raw)
        return ContractArtifact(
            abi=data["abi"],
            bytecode=data["bytecode"],
            deployed_bytecode=data["deployedBytecode"],
            proxy_abi=data["proxy"]["abi"],
            proxy_bytecode=data["proxy"]["bytecode"],
            compiler_version=data["compiler"]["version"],
            source_sha256=data["sourceSha256"],
            sha256=hashlib.sha256(raw).hexdigest(),
            path=p,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ChainConfigError(
            f"contract artifact {p} is not a compile.mjs output ({exc!r}); rebuild it with `node contracts/compile.mjs`"
        ) from None
