"""ChainSettings / LocalChainSettings validation says what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivemind_exp.chain.settings import ChainSettings, LocalChainSettings, read_private_key
from hivemind_exp.common.settings_base import SettingsError, load_settings

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    import os

    for name in list(os.environ):
        if name.startswith("RLSWARM_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = load_settings(ChainSettings)
    assert s.chain_mode == "off" and s.rpc_url == "http://127.0.0.1:8545" and s.login_url == "http://127.0.0.1:3000"


def test_malformed_contract_address_names_the_fix() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(ChainSettings, contract_address="0x1234")
    assert "contract_address" in err.value.message and "40 hex digits" in err.value.message
    assert "--contract-address" in err.value.message


def test_bad_rpc_url() -> None:
    with pytest.raises(SettingsError, match="http:// or https://"):
        load_settings(ChainSettings, rpc_url="127.0.0.1:8545")


def test_wallet_mode_needs_a_readable_key_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--wallet-key-file"):
        load_settings(ChainSettings, chain_mode="wallet")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(SettingsError, match="64 hex digits") as err:
        load_settings(ChainSettings, chain_mode="wallet", wallet_key_file=str(bad))
    assert "not a key" not in err.value.message  # the file's content is never shown
    good = tmp_path / "good.key"
    good.write_text(KEY[2:] + "\n")
    s = load_settings(ChainSettings, chain_mode="wallet", wallet_key_file=str(good))
    assert read_private_key(s.wallet_key_file) == KEY


def test_key_file_content_is_never_echoed(tmp_path: Path) -> None:
    secretish = tmp_path / "k"
    secretish.write_text("ab" * 31)  # 62 hex digits: wrong length
    with pytest.raises(ValueError) as err:
        read_private_key(secretish)
    assert "ab" * 31 not in str(err.value)


def test_relay_mode_needs_org_and_key() -> None:
    with pytest.raises(SettingsError, match="--org-id and --api-key"):
        load_settings(ChainSettings, chain_mode="relay")
    s = load_settings(ChainSettings, chain_mode="relay", org_id="org-1", api_key="k")
    assert s.api_key is not None and s.api_key.get_secret_value() == "k"
    assert "k" not in repr(s.api_key)


def test_env_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLSWARM_CHAIN_MODE", "off")
    monkeypatch.setenv("RLSWARM_RPC_TIMEOUT", "3.5")
    assert load_settings(ChainSettings).rpc_timeout == 3.5
    monkeypatch.setenv("RLSWARM_RPC_TIMEOUT", "0")
    with pytest.raises(SettingsError, match="RLSWARM_RPC_TIMEOUT"):
        load_settings(ChainSettings)


def test_local_chain_bootnodes_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLSWARM_BOOTNODES", "/ip4/127.0.0.1/tcp/1/p2p/QmA, /ip4/127.0.0.1/tcp/2/p2p/QmB")
    assert load_settings(LocalChainSettings).bootnodes == ["/ip4/127.0.0.1/tcp/1/p2p/QmA", "/ip4/127.0.0.1/tcp/2/p2p/QmB"]
    monkeypatch.setenv("RLSWARM_BOOTNODES", '["/ip4/1.2.3.4/tcp/5/p2p/QmC"]')
    assert load_settings(LocalChainSettings).bootnodes == ["/ip4/1.2.3.4/tcp/5/p2p/QmC"]
    monkeypatch.delenv("RLSWARM_BOOTNODES")
    with pytest.raises(SettingsError, match="not a multiaddr"):
        load_settings(LocalChainSettings, bootnodes=["127.0.0.1:38331"])


def test_local_chain_key_and_coordinator_checked() -> None:
    with pytest.raises(SettingsError, match="deployer_key must be a private key"):
        load_settings(LocalChainSettings, deployer_key="0x12")
    with pytest.raises(SettingsError, match="coordinator_address"):
        load_settings(LocalChainSettings, coordinator_address="coordinator")
    with pytest.raises(SettingsError, match="anvil_port"):
        load_settings(LocalChainSettings, anvil_port="70000")


def test_stuck_transaction_replacement_settings_are_checked(tmp_path: Path) -> None:
    key_file = tmp_path / "wallet.key"
    key_file.write_text(KEY)
    s = load_settings(ChainSettings, chain_mode="wallet", wallet_key_file=str(key_file))
    assert (s.tx_replace_after, s.tx_max_replacements, s.tx_fee_bump) == (30.0, 3, 1.25)
    with pytest.raises(SettingsError) as err:
        load_settings(ChainSettings, tx_fee_bump="1.05")
    assert "tx_fee_bump" in err.value.message and "1.125" in err.value.message
    with pytest.raises(SettingsError, match="tx_replace_after"):
        load_settings(ChainSettings, tx_replace_after="0")
    with pytest.raises(SettingsError) as err:  # a replacement that could never happen
        load_settings(ChainSettings, chain_mode="wallet", wallet_key_file=str(key_file), receipt_timeout="30")
    assert "tx_replace_after" in err.value.message and "receipt_timeout" in err.value.message
    s = load_settings(ChainSettings, chain_mode="wallet", wallet_key_file=str(key_file), receipt_timeout="30",
                      tx_max_replacements="0")
    assert s.tx_max_replacements == 0


def test_coordinator_key_file_writes_a_dev_key_and_excludes_an_address(tmp_path) -> None:
    import stat

    from pydantic import ValidationError

    from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS, COORDINATOR_DEV_ACCOUNT, write_dev_key
    from hivemind_exp.chain.settings import LocalChainSettings

    with pytest.raises(ValidationError, match="not both"):
        LocalChainSettings(coordinator_key_file=tmp_path / "k",
                           coordinator_address="0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
    path = tmp_path / "chain" / "coordinator.key"
    address = write_dev_key(path, COORDINATOR_DEV_ACCOUNT)
    assert address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's well-known account 1
    assert path.read_text().strip() == ANVIL_DEV_KEYS[COORDINATOR_DEV_ACCOUNT]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert write_dev_key(path, COORDINATOR_DEV_ACCOUNT) == address  # idempotent
