"""Where things live on disk: the repository, caches, node data.

Only pure functions: nothing is created at import time.
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout this package runs from (editable install) or the package's parent."""
    return Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Cache for converted model checkpoints; `RLSWARM_CACHE_DIR` moves it."""
    env = os.environ.get("RLSWARM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rl-swarm"


def shared_dir() -> Path:
    """The shared data (GSM8K split, public ABIs) that tests and benchmarks read, never shipped.

    `RLSWARM_SHARED_DIR`, else `shared/` beside the checkout.
    """
    env = os.environ.get("RLSWARM_SHARED_DIR")
    if env:
        return Path(env).expanduser()
    return repo_root().parent / "shared"


def node_modules_bin(name: str) -> Path:
    """A binary installed by the project's package.json (anvil, solc)."""
    return repo_root() / "node_modules" / ".bin" / name
