"""The committed artifact is what `node contracts/compile.mjs` builds from the committed source."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from hivemind_exp.chain.artifact import artifact_path, load_artifact
from hivemind_exp.common.paths import repo_root


def test_artifact_source_hash_matches_source() -> None:
    source = (repo_root() / "contracts" / "SwarmCoordinator.sol").read_bytes()
    assert load_artifact().source_sha256 == hashlib.sha256(source).hexdigest(), (
        "contracts/SwarmCoordinator.sol changed since the artifact was built: run `node contracts/compile.mjs`")


def test_recompiling_reproduces_the_committed_artifact(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is needed to compile the contract"
    out = tmp_path / "SwarmCoordinator.json"
    proc = subprocess.run([node, str(repo_root() / "contracts" / "compile.mjs"), "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == artifact_path().read_bytes(), (
        "committed contracts/build/SwarmCoordinator.json is stale: run `node contracts/compile.mjs` and commit it")
    data = json.loads(out.read_text())
    assert data["compiler"]["version"].startswith("0.8.37")
    assert len(bytes.fromhex(data["deployedBytecode"][2:])) < 24_576, "over the EIP-170 contract size limit"
