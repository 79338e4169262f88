"""`rl-swarm up`: the whole local swarm on one machine, each service its own process.

Order: chain (anvil + contract) -> coordinator (bootnode, stage manager) -> login ->
trainer peers -> dashboard. State lives under `--run-dir` (identities, wallets, the
deployment, checkpoints), logs under `--logs-dir`; a second `up` reuses all of it
(same peer IDs, same contract on a still-running or saved chain).

Local wallets: the coordinator and each peer get a deterministic account of the local
chain's test mnemonic (never use these keys on a public chain); peers beyond anvil's ten
funded accounts are funded with `anvil_setBalance`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hivemind_exp.chain.anvil import COORDINATOR_DEV_ACCOUNT
from hivemind_exp.services.settings import LauncherSettings
from hivemind_exp.common.settings_base import add_settings_arguments, load_settings, overrides_from_args

# anvil's default mnemonic: its accounts are public knowledge, fine for a local chain only.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
COORDINATOR_ACCOUNT = COORDINATOR_DEV_ACCOUNT
FIRST_PEER_ACCOUNT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, LauncherSettings, skip=("hf_token",))


def _local_key(index: int) -> tuple[str, str]:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return acct.key.hex() if acct.key.hex().startswith("0x") else "0x" + acct.key.hex(), acct.address


def _write_secret(path: Path, text: str) -> None:
    from hivemind_exp.common.fileio import atomic_write_text

    if not path.exists() or path.read_text().strip() != text:
        atomic_write_text(path, text + "\n", mode=0o600)


class Plan:
    """Everything `up` derives from the settings before starting a process."""

    def __init__(self, s: LauncherSettings):
        from hivemind_exp.swarm.identity import ensure_identity, load_peer_id

        self.s = s
        self.run_dir = s.run_dir.resolve()
        self.logs_dir = s.logs_dir.resolve()
        self.py = [sys.executable, "-m", "hivemind_exp.cli"]
        coord_dir = self.run_dir / "coordinator"
        coord_dir.mkdir(parents=True, exist_ok=True)
        self.coord_identity = coord_dir / "swarm.pem"
        ensure_identity(self.coord_identity)
        self.coord_peer_id = load_peer_id(self.coord_identity)
        self.coord_maddr = f"/ip4/127.0.0.1/tcp/{s.coordinator_port}/p2p/{self.coord_peer_id}"
        self.deployment = self.run_dir / "deployment.json"
        self.peers: list[dict[str, object]] = []
        for i in range(s.num_peers):
            d = self.run_dir / f"peer{i}"
            d.mkdir(parents=True, exist_ok=True)
            ensure_identity(d / "swarm.pem")
            self.peers.append({"dir": d, "identity": d / "swarm.pem", "peer_id": load_peer_id(d / "swarm.pem"),
                               "port": s.peer_base_port + i})
        self.coord_key_file = coord_dir / "wallet.key"
        self.coord_address = ""
        self.peer_addresses: list[str] = []
        if s.chain:
            key, self.coord_address = _local_key(COORDINATOR_ACCOUNT)
            _write_secret(self.coord_key_file, key)
            for i, p in enumerate(self.peers):
                key, addr = _local_key(FIRST_PEER_ACCOUNT + i)
                _write_secret(Path(p["dir"]) / "wallet.key", key)  # type: ignore[arg-type]
                self.peer_addresses.append(addr)

    def ports(self) -> dict[str, tuple[int, str]]:
        s = self.s
        ports = {"coordinator DHT": (s.coordinator_port, "--coordinator-port / RLSWARM_COORDINATOR_PORT")}
        if s.chain:
            ports["chain"] = (s.anvil_port, "--anvil-port / RLSWARM_ANVIL_PORT")
        if s.login:
            ports["login"] = (s.login_port, "--login-port / RLSWARM_LOGIN_PORT")
        if s.dashboard:
            ports["dashboard"] = (s.dashboard_port, "--dashboard-port / RLSWARM_DASHBOARD_PORT")
        for i, p in enumerate(self.peers):
            ports[f"peer {i} DHT"] = (int(p["port"]), "--peer-base-port / RLSWARM_PEER_BASE_PORT")  # type: ignore[arg-type]
        if s.metrics_base_port and not _otlp():
            for i in range(len(self.peers) + 1):
                ports[f"metrics {i}"] = (s.metrics_base_port + i, "--metrics-base-port / RLSWARM_METRICS_BASE_PORT")
        return ports

    def chain_args(self) -> list[str]:
        if not self.s.chain:
            return ["--chain-mode", "off"]
        return ["--rpc-url", f"http://127.0.0.1:{self.s.anvil_port}", "--deployment-file", str(self.deployment)]

    def metrics_port(self, index: int) -> list[str]:
        if not self.s.metrics_base_port or _otlp():
            return []
        return ["--metrics-port", str(self.s.metrics_base_port + index)]

    def sapo_args(self) -> list[str]:
        """The SAPO knobs given to `up`, passed on to every trainer (only those set, so env/.env still apply)."""
        from hivemind_exp.services.settings import SapoSettings

        s, out = self.s, []
        for name in SapoSettings.model_fields:
            if name not in s.model_fields_set:
                continue
            value, flag = getattr(s, name), "--" + name.replace("_", "-")
            if isinstance(value, bool):
                out.append(flag if value else "--no-" + name.replace("_", "-"))
            elif value is not None:
                out += [flag, str(value)]
        return out

    def model_args(self) -> list[str]:
        s = self.s
        args = ["--model", s.model, "--device", s.device, "--dataset", s.dataset, "--swarm-seed", str(s.swarm_seed)]
        if s.config:
            args += ["--config", str(Path(s.config).resolve())]
        if s.dataset_path:
            args += ["--dataset-path", str(Path(s.dataset_path).resolve())]
        return args

    def specs(self):
        from hivemind_exp.services.launcher import ServiceSpec, http_ready, log_ready
        from hivemind_exp.trainer.threads import available_cpus

        s = self.s
        specs = []
        base_env = {"LOG_LEVEL": s.log_level}
        if s.chain:
            specs.append(ServiceSpec(
                "chain", self.py + ["chain", "--anvil-port", str(s.anvil_port),
                                    "--anvil-state-file", str(self.run_dir / "chain-state.json"),
                                    "--deployment-file", str(self.deployment),
                                    "--coordinator-address", self.coord_address, "--bootnodes", self.coord_maddr,
                                    "--log-file", str(self.logs_dir / "anvil.log")],
                env=base_env, ready=log_ready(self.logs_dir / "chain.log", "chain ready"),
                ready_what=f"anvil on port {s.anvil_port} and the contract deployment", ready_timeout=s.ready_timeout))
        coord = self.py + ["coordinator", "--identity-path", str(self.coord_identity),
                           "--host-maddrs", f"/ip4/127.0.0.1/tcp/{s.coordinator_port}",
                           "--stage-seconds", str(s.stage_seconds), "--min-stage-seconds", str(s.min_stage_seconds),
                           "--early-advance-min-peers", str(s.num_peers), "--game", s.game,
                           "--state-file", str(self.run_dir / "coordinator" / "state.json")] + self.metrics_port(0)
        if s.chain:
            coord += ["--chain-mode", "wallet", "--wallet-key-file", str(self.coord_key_file)] + self.chain_args()
        else:
            coord += self.chain_args()
        specs.append(ServiceSpec("coordinator", coord, env=base_env,
                                 ready=log_ready(self.logs_dir / "coordinator.log", "coordinator ready"),
                                 ready_what=f"the coordinator's DHT on port {s.coordinator_port}",
                                 ready_timeout=s.ready_timeout, depends_on=["chain"] if s.chain else []))
        if s.login:
            argv = self.py + ["login-server", "--port", str(s.login_port), "--host", "127.0.0.1",
                              "--data-dir", str(self.run_dir / "login"),
                              "--cors-origins", f"http://127.0.0.1:{s.dashboard_port}",
                              "--cors-origins", f"http://localhost:{s.dashboard_port}"]
            if s.chain:
                argv += ["--rpc-url", f"http://127.0.0.1:{s.anvil_port}", "--deployment-file", str(self.deployment)]
            specs.append(ServiceSpec("login", argv, env=base_env,
                                     ready=http_ready(f"http://127.0.0.1:{s.login_port}/api/healthz"),
                                     ready_what=f"http://127.0.0.1:{s.login_port}/api/healthz",
                                     ready_timeout=s.ready_timeout, depends_on=["chain"] if s.chain else []))
        for i, p in enumerate(self.peers):
            argv = self.py + ["trainer", "--identity-path", str(p["identity"]), "--data-dir", str(p["dir"]),
                              "--host-maddrs", f"/ip4/127.0.0.1/tcp/{p['port']}",
                              "--initial-peers", self.coord_maddr, "--coordinator-peer-id", self.coord_peer_id]
            argv += self.model_args() + self.metrics_port(i + 1) + ["--game", s.game] + self.sapo_args()
            # Peers on one machine split its CPUs: oversubscribed OpenMP threads spin and run far slower.
            argv += ["--torch-threads", str(max(1, available_cpus() // max(1, s.num_peers)))]
            if s.max_rounds:
                argv += ["--max-rounds", str(s.max_rounds)]
            if s.chain:
                argv += ["--chain-mode", "wallet", "--wallet-key-file", str(Path(p["dir"]) / "wallet.key")]  # type: ignore[arg-type]
            argv += self.chain_args()
            specs.append(ServiceSpec(f"peer{i}", argv, env=base_env, depends_on=["coordinator"],
                                     finishes=bool(s.max_rounds)))
        if s.dashboard:
            argv = self.py + ["dashboard", "--port", str(s.dashboard_port), "--host", "127.0.0.1",
                              "--initial-peers", self.coord_maddr, "--coordinator-peer-id", self.coord_peer_id,
                              "--login-origin", f"http://127.0.0.1:{s.login_port}"]
            if self.peers:
                argv += ["--identity-file", str(self.peers[0]["identity"]), "--data-dir", str(self.peers[0]["dir"])]
            if s.chain:
                argv += ["--chain", "on", "--rpc-url", f"http://127.0.0.1:{s.anvil_port}",
                         "--deployment-file", str(self.deployment)]
            else:
                argv += ["--chain", "off"]
            specs.append(ServiceSpec("dashboard", argv, env=base_env,
                                     ready=http_ready(f"http://127.0.0.1:{s.dashboard_port}/api/round_and_stage"),
                                     ready_what=f"http://127.0.0.1:{s.dashboard_port}",
                                     ready_timeout=s.ready_timeout, depends_on=["coordinator"]))
        return specs


def _otlp() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def _fund_peers(plan: Plan) -> None:
    """Give every local peer wallet gas money (anvil only funds its first ten accounts)."""
    from hivemind_exp.chain.anvil import rpc_request

    url = f"http://127.0.0.1:{plan.s.anvil_port}"
    for addr in [plan.coord_address, *plan.peer_addresses]:
        balance = int(rpc_request(url, "eth_getBalance", [addr, "latest"]), 16)
        if balance < 10**18:
            rpc_request(url, "anvil_setBalance", [addr, hex(100 * 10**18)])


def run(args: argparse.Namespace) -> int:
    from hivemind_exp.services.launcher import LaunchError, Supervisor, check_ports

    settings = load_settings(LauncherSettings, **overrides_from_args(args, LauncherSettings))
    plan = Plan(settings)
    sup = Supervisor(plan.logs_dir, restart_policy=settings.restart_policy, max_restarts=3)
    sup.install_signal_handlers()
    try:
        check_ports(plan.ports())
        specs = plan.specs()
        sup.say(f"starting {len(specs)} services; logs in {plan.logs_dir}")
        chain_specs = [sp for sp in specs if sp.name == "chain"]
        if chain_specs:
            sup.start(chain_specs)
            _fund_peers(plan)
        sup.start([sp for sp in specs if sp.name != "chain"] if chain_specs else specs)
        if sup.stop_event.is_set():
            return 130
        lines = ["local swarm is up:"]
        if settings.dashboard:
            lines.append(f"  dashboard   http://127.0.0.1:{settings.dashboard_port}")
        if settings.login:
            lines.append(f"  login       http://127.0.0.1:{settings.login_port}")
        if settings.chain:
            lines.append(f"  chain       http://127.0.0.1:{settings.anvil_port} (contract in {plan.deployment})")
        lines.append(f"  coordinator {plan.coord_maddr}")
        for i, p in enumerate(plan.peers):
            lines.append(f"  peer{i}       {p['peer_id']} (log {plan.logs_dir / f'peer{i}.log'})")
        lines.append("press Ctrl-C to stop everything")
        sup.say("\n".join(lines))
        return sup.watch()
    except LaunchError as err:
        sup.say(f"error: {err}")
        return 1
    finally:
        sup.shutdown()
