"""`rl-swarm eval` as a user runs it: a real subprocess on the tiny checkpoint and real GSM8K lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hivemind_exp.game.data import GeneratedSource, JsonlSource
from hivemind_exp.game.evaluation import held_out_split
from hivemind_exp.common.paths import shared_dir

GSM8K = shared_dir() / "datasets" / "gsm8k" / "train.jsonl"


def rl_swarm(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # No RLSWARM_* from the developer's shell, no .env (cwd is a temp dir), no hub downloads.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLSWARM_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "hivemind_exp.cli", "eval", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gsm8k_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 10 real GSM8K lines (read from the shared file, written to a temp file)."""
    path = tmp_path_factory.mktemp("data") / "head.jsonl"
    with GSM8K.open(encoding="utf-8") as fh:
        path.write_text("".join(next(fh) for _ in range(10)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trainer_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint directory exactly as the trainer writes it (GRPOEngine.save)."""
    from hivemind_exp.trainer.grpo import GRPOEngine
    from tests.fixtures.tiny_model import make_tiny_model

    return GRPOEngine(*make_tiny_model(seed=1)).save(tmp_path_factory.mktemp("node") / "checkpoint")


def assert_one_error_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), errors[0]
    return errors[0]


def test_json_output_limit_and_progress(trainer_checkpoint, gsm8k_head, tmp_path):
    proc = rl_swarm("--model", str(trainer_checkpoint), "--dataset-path", str(gsm8k_head), "--limit", "3",
                    "--batch-size", "2", "--max-new-tokens", "6", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # one JSON object, nothing else on stdout
    out = json.loads(lines[0])
    assert out["n"] == 3 and out["dataset"] == str(gsm8k_head)
    assert 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["format_rate"] <= 1.0
    assert 1.0 <= out["mean_completion_tokens"] <= 6.0
    assert (out["batch_size"], out["max_new_tokens"], out["device"]) == (2, 6, "cpu")
    assert "eval" in proc.stderr and "3/3" in proc.stderr  # tqdm bar on stderr


def test_generated_problems_table_and_records(tiny_model_dir, tmp_path):
    records = tmp_path / "out" / "records.jsonl"
    proc = rl_swarm("--model", str(tiny_model_dir), "--generated-templates", "0,2", "--limit", "4", "--seed", "3",
                    "--max-new-tokens", "4", "--save-records", str(records), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "format rate" in proc.stdout and "templates 0,2" in proc.stdout
    assert "eval:" not in proc.stderr
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(rows) == 4
    expected = GeneratedSource(seed=3, size=4, templates=[0, 2]).problems()
    assert [r["qid"] for r in rows] == [p.qid for p in expected]
    assert all(set(r) >= {"qid", "completion", "predicted", "correct", "completion_tokens"} for r in rows)


def test_held_out_flag_evaluates_the_nodes_held_out_set(tiny_model_dir, gsm8k_head, tmp_path):
    records = tmp_path / "records.jsonl"
    proc = rl_swarm("--model", str(tiny_model_dir), "--dataset-path", str(gsm8k_head), "--held-out", "3",
                    "--seed", "42", "--max-new-tokens", "2", "--save-records", str(records), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 3
    _, held = held_out_split(JsonlSource(gsm8k_head).problems(), 3, seed=42)
    assert [json.loads(line)["qid"] for line in records.read_text().splitlines()] == [p.qid for p in held]


def test_missing_and_broken_dataset(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert_one_error_line(rl_swarm("--dataset-path", str(missing), cwd=tmp_path), 2, str(missing), "does not exist")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n{\"question\": \"q\"}\n")
    assert_one_error_line(rl_swarm("--dataset-path", str(garbage), cwd=tmp_path), 2, "no usable line")


def test_missing_and_broken_model(tiny_model_dir, gsm8k_head, tmp_path):
    assert_one_error_line(rl_swarm("--model", "./no-such-model", "--dataset-path", str(gsm8k_head), cwd=tmp_path),
                          1, "no-such-model")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a download or copy cut short
    assert_one_error_line(rl_swarm("--model", str(broken), "--dataset-path", str(gsm8k_head), cwd=tmp_path),
                          1, "could not load model", str(broken))


def test_bad_settings_exit_2(tmp_path, gsm8k_head):
    for args, needle in [
        (("--batch-size", "0"), "batch_size"),
        (("--generated-templates", "0,99"), "do not exist"),
        (("--generated-templates", "1", "--dataset-path", str(gsm8k_head)), "pick one"),
        (("--held-out", "2.5"), "whole number"),
    ]:
        proc = rl_swarm(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
