"""Every shipped config file parses; profile choice follows device and model."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivemind_exp.trainer.profiles import CONFIG_ROOT, MIX_DIR, ProfileError, choose_profile, load_profile

SHIPPED = sorted(p for p in CONFIG_ROOT.glob("*/*.yaml") if p.parent.name != MIX_DIR)
MIXES = sorted((CONFIG_ROOT / MIX_DIR).glob("*.yaml"))


def test_every_shipped_yaml_is_a_profile_or_a_task_mix():
    assert {p.parent.name for p in CONFIG_ROOT.glob("*/*.yaml")} == {"cpu", "mac", "gpu", MIX_DIR}
    assert MIXES, "the default task mix must ship"


def test_there_are_profiles_for_every_device():
    assert {p.parent.name for p in SHIPPED} == {"cpu", "mac", "gpu"}
    for device in ("cpu", "mac", "gpu"):
        names = {p.name for p in SHIPPED if p.parent.name == device}
        assert "grpo-qwen-2.5-0.5b-deepseek-r1.yaml" in names and "grpo-smollm2-135m-instruct.yaml" in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_profile_parses(path: Path):
    prof = load_profile(path)
    assert prof.grpo.num_generations >= 2
    assert prof.grpo.max_completion_length > 0
    assert prof.task_mix_file() in MIXES, f"{path} names task mix {prof.task_mix}, which does not ship"


@pytest.mark.parametrize("path", MIXES, ids=lambda p: f"{MIX_DIR}/{p.name}")
def test_shipped_task_mix_parses_and_validates(path: Path):
    from hivemind_exp.sapo.tasks import ReasoningGymSource, TaskMix

    mix = TaskMix.from_yaml(path)
    source = ReasoningGymSource(mix)  # checks every task, config key, level and stored answer
    assert len(source.draw(node_seed=0, round_no=0, n=8)) == 8


def test_choose_by_model_and_device():
    path, prof = choose_profile("embedded", "cpu")
    assert path.parent.name == "cpu" and prof.model == "embedded"
    path, prof = choose_profile("Qwen/Qwen2.5-0.5B-Instruct", "cuda")
    assert path.name == "grpo-qwen-2.5-0.5b-deepseek-r1.yaml" and path.parent.name == "gpu"
    path, _ = choose_profile("some/unknown-model", "mps")
    assert path.parent.name == "mac"  # falls back to the device's default profile


def test_bad_profile_messages(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: embedded\ngrpo:\n  num_generations: 1\n")
    with pytest.raises(ProfileError, match="num_generations"):
        load_profile(bad)
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(bad)
    bad.write_text("model: embedded\ntypo_key: 1\n")
    with pytest.raises(ProfileError, match="typo_key"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.yaml")
