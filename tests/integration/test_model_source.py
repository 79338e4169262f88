"""The embedded model: GGUF -> plain safetensors once, trainable; broken models give one clear error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hivemind_exp.trainer import model_source as ms


@pytest.mark.slow
def test_embedded_model_materialises_once_and_fine_tunes(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("RLSWARM_CACHE_DIR", str(tmp_path / "cache"))
    path = ms.materialize_embedded(progress=False)
    assert path.is_relative_to(tmp_path)
    assert (path / "model.safetensors").stat().st_size > 100_000_000
    mtime = (path / "model.safetensors").stat().st_mtime
    assert ms.materialize_embedded(progress=False) == path  # reused, not rebuilt
    assert (path / "model.safetensors").stat().st_mtime == mtime

    model, tok = ms.load_model_and_tokenizer("embedded", progress=False)
    assert getattr(model.config, "quantization_config", None) is None
    assert not getattr(model, "is_quantized", False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # It generates ...
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    # ... and trains: one optimizer step moves the weights (a quantized model would refuse).
    before = model.model.embed_tokens.weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(input_ids=out, labels=out).loss
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.model.embed_tokens.weight)


def test_missing_and_broken_models_give_one_clear_error(tmp_path):
    with pytest.raises(ms.ModelSourceError, match="does not exist"):
        ms.resolve_model(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ms.ModelSourceError, match="no config.json"):
        ms.resolve_model(str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ms.ModelSourceError, match="Could not load model"):
        ms.load_model_and_tokenizer(str(broken), progress=False)


def test_trainer_cli_reports_a_broken_model_in_one_line(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "hivemind_exp.cli", "trainer", "--model", str(broken),
                           "--identity-path", str(tmp_path / "swarm.pem"), "--data-dir", str(tmp_path / "node"),
                           "--host-maddrs", "/ip4/127.0.0.1/tcp/0", "--dataset", "generated"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "error: Could not load model" in proc.stderr
