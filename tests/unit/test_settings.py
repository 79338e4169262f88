"""Settings validation: bad values name the setting, where it comes from and how to fix it."""

from __future__ import annotations

import argparse

import pytest

from hivemind_exp.services.settings import LauncherSettings
from hivemind_exp.common.settings_base import SettingsError, add_settings_arguments, load_settings, overrides_from_args


def test_defaults_load(monkeypatch):
    s = load_settings(LauncherSettings)
    assert s.num_peers == 2 and s.anvil_port == 8545 and s.login_port == 3000 and s.dashboard_port == 8080


def test_bad_int_names_flag_and_env():
    with pytest.raises(SettingsError) as ei:
        load_settings(LauncherSettings, num_peers="many")
    msg = ei.value.message
    assert "num_peers" in msg and "--num-peers" in msg and "RLSWARM_NUM_PEERS" in msg and "'many'" in msg


def test_out_of_range():
    with pytest.raises(SettingsError) as ei:
        load_settings(LauncherSettings, num_peers=0)
    assert "greater than or equal to 1" in ei.value.message


def test_env_is_read(monkeypatch):
    monkeypatch.setenv("RLSWARM_NUM_PEERS", "3")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    s = load_settings(LauncherSettings)
    assert s.num_peers == 3 and s.log_level == "DEBUG"


def test_flag_beats_env(monkeypatch):
    monkeypatch.setenv("RLSWARM_NUM_PEERS", "3")
    assert load_settings(LauncherSettings, num_peers="4").num_peers == 4


def test_port_clash_is_explained():
    with pytest.raises(SettingsError) as ei:
        load_settings(LauncherSettings, login_port=8080)
    assert "both use port 8080" in ei.value.message


def test_missing_dataset_file(tmp_path):
    with pytest.raises(SettingsError) as ei:
        load_settings(LauncherSettings, dataset_path=str(tmp_path / "nope.jsonl"))
    assert "does not exist" in ei.value.message and "--dataset-path" in ei.value.message


def test_dotenv_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RLSWARM_NUM_PEERS=5\nHF_TOKEN=hf_secret\n")
    s = load_settings(LauncherSettings)
    assert s.num_peers == 5
    assert s.hf_token is not None and s.hf_token.get_secret_value() == "hf_secret"
    assert "hf_secret" not in repr(s)  # secrets never print


def test_flags_generated_from_fields():
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, LauncherSettings)
    args = parser.parse_args(["--num-peers", "3", "--no-chain"])
    over = overrides_from_args(args, LauncherSettings)
    assert over == {"num_peers": "3", "chain": False}
    assert load_settings(LauncherSettings, **over).chain is False


def test_up_passes_the_sapo_knobs_on_to_every_trainer(tmp_path, monkeypatch) -> None:
    from hivemind_exp.commands.up import Plan
    from hivemind_exp.trainer.profiles import CONFIG_ROOT, DEFAULT_TASK_MIX
    from hivemind_exp.services.settings import TrainerSettings

    monkeypatch.chdir(tmp_path)
    mix = CONFIG_ROOT / DEFAULT_TASK_MIX
    s = load_settings(LauncherSettings, game="sapo", task_mix=str(mix), curriculum=True, sapo_external_groups="2",
                      num_peers="2", chain=False, login=False, dashboard=False, run_dir=str(tmp_path / "run"))
    trainers = [spec for spec in Plan(s).specs() if spec.name.startswith("peer")]
    assert len(trainers) == 2
    for spec in trainers:
        argv = spec.argv[spec.argv.index("trainer") + 1:]
        assert argv[argv.index("--task-mix") + 1] == str(mix) and "--curriculum" in argv
        assert argv[argv.index("--sapo-external-groups") + 1] == "2"
        assert "--sapo-local-groups" not in argv  # unset knobs stay the trainer's own (env, .env, default)
        # ... and the trainer accepts exactly what it is given.
        def val(flag: str) -> str:
            return argv[argv.index(flag) + 1]

        t = load_settings(TrainerSettings, game=val("--game"), task_mix=val("--task-mix"), curriculum=True,
                          sapo_external_groups=val("--sapo-external-groups"))
        assert (t.game, t.task_mix, t.curriculum, t.sapo_external_groups) == ("sapo", mix, True, 2)
