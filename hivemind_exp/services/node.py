"""The trainer node: plays the swarm's three-stage rounds and trains on them with GRPO.

Loop (one thread; a second one heartbeats):

1. Read the round and stage: from the chain when chain mode is on (cached; the DHT record
   is the fallback while the RPC is down), else from the coordinator's signed DHT record.
   A stage whose deadline passed long ago (coordinator silent) is not trained on.
2. Run the stage once: build the stage's prompts (stage 2/3 from the other peers' records
   that arrived by the fetch deadline), one GRPO step with the stage's rubric, publish the
   best completion per question and the mean reward, queue the reward for the chain.
3. Save the checkpoint (model, optimizer, round/stage reached) atomically; keep the last K.
4. When a round's third stage is over, score the swarm's final answers, pick winners,
   publish and queue them.

With ``--game sapo`` a round has one stage, played by `sapo.game.SapoPlayer`: the node
samples groups of completions on its own ReasoningGym questions, publishes them, takes
groups other peers published, re-scores them against regenerated answers and makes one
GRPO step on both; it votes for the peers whose groups scored best when the round is over.
Every step, in either game, is one JSON line in ``<data_dir>/events.jsonl`` (`events`).

A late peer joins the current stage (prompts are built from the swarm's records, not from
its own past); with no records to build a stage-2/3 prompt from it skips to the next
round. A restarted node resumes from its checkpoint and does not redo or republish a
stage it finished (the node state says which).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hivemind_exp.game.data import DatasetSource, Problem, open_source, round_problems
from hivemind_exp.common.events import EventSink
from hivemind_exp.game import stage as stages
from hivemind_exp.services.node_state import NodeState
from hivemind_exp.services.settings import TrainerSettings

if TYPE_CHECKING:  # types only: the node imports its heavy parts when it builds them
    from hivemind_exp.chain.client import ChainClient
    from hivemind_exp.chain.outbox import Outbox, OutboxWorker
    from hivemind_exp.trainer.profiles import Profile
    from hivemind_exp.sapo.game import SapoPlayer
    from hivemind_exp.sapo.tasks import ReasoningGymSource
    from hivemind_exp.swarm.records import EvalSummary, SapoStats
    from hivemind_exp.swarm.transport import SwarmTransport
    from hivemind_exp.common.telemetry import Telemetry, TrainerMetrics
    from hivemind_exp.trainer.protocol import TrainingEngine

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "node-state.json"
MAX_WINNERS_PER_VOTE = 32  # the contract refuses longer votes (InvalidVote)


@dataclass(frozen=True)
class StageClock:
    round: int
    stage: int  # from 1 (hivemind_exp.game.stage)
    deadline: float | None  # unix seconds, when known
    source: str  # "chain" or "dht"


class NodeError(RuntimeError):
    """The node cannot start or go on; the message says why and what to change."""


class TrainerNode:
    """One trainer. The product passes only settings and `setup()` builds the rest; tests (and
    in-process benchmarks) pass collaborators in: an in-memory transport, an anvil or scripted
    chain client, a tiny engine, a list of events, a fake clock. `setup()` builds only what was
    not given. `tick()` plays one step of the loop and says what it did."""

    def __init__(self, settings: TrainerSettings, stop_event: threading.Event | None = None, *,
                 transport: SwarmTransport | None = None, chain: ChainClient | None = None,
                 engine: TrainingEngine | None = None, events: EventSink | None = None,
                 clock: Callable[[], float] = time.time, telemetry: bool = True):
        self.s = settings
        self.stop = stop_event or threading.Event()
        self.clock = clock  # wall time (unix seconds): stage deadlines are wall-clock times
        self.data_dir = Path(settings.data_dir)
        self.state_path = self.data_dir / STATE_FILE
        self.state = NodeState()
        self.transport: SwarmTransport | None = transport
        self.chain: ChainClient | None = chain
        self.engine: TrainingEngine | None = engine
        self.events: EventSink | None = events
        self._telemetry_on = telemetry  # off: no OpenTelemetry providers (several nodes in one process)
        self.outbox: Outbox | None = None
        self.outbox_worker: OutboxWorker | None = None
        self.dataset: DatasetSource | None = None
        self.metrics: TrainerMetrics | None = None
        self.telemetry: Telemetry | None = None
        self.held_out: list[Any] = []  # Problem (three-stage) or TaskProblem (SAPO)
        self.evaluation: EvalSummary | None = None  # latest, repeated in every heartbeat
        self.sapo_stats: SapoStats | None = None  # latest SAPO round, likewise
        self.questions_per_round = 1
        self._last_clock: StageClock | None = None
        self._wait_note: tuple[Any, ...] | None = None
        self.foreign_game: str | None = None  # the coordinator's game when it is not this node's
        self._heartbeat_thread: threading.Thread | None = None
        self.rounds_finished = 0
        self._drops_reported: dict[str, int] = {}
        self.profile: Profile | None = None  # the device profile chosen in _setup_engine
        self.peer_seed = 0
        self.sapo: SapoPlayer | None = None  # with --game sapo
        self.task_source: ReasoningGymSource | None = None  # with --game sapo

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        peer_id = self._identity()
        self.state = NodeState.load(self.state_path)
        if self.state.peer_id and self.state.peer_id != peer_id:
            raise NodeError(f"{self.data_dir} belongs to peer {self.state.peer_id}, but {self.s.identity_path} is peer "
                            f"{peer_id}: use the matching --identity-path or another --data-dir")
        self.state.peer_id = peer_id
        self._clean_checkpoint_leftovers()
        from hivemind_exp.swarm.names import peer_name

        log.info("node identity: peer %s (%s)", peer_id, peer_name(peer_id))
        if self.events is None:
            from hivemind_exp.common.events import EVENTS_FILE, JsonlEvents

            self.events = JsonlEvents(self.data_dir / EVENTS_FILE)
        if self._telemetry_on:
            self._setup_telemetry(peer_id)
        self._setup_hub()
        self._setup_chain(peer_id)
        self._setup_engine()
        self._setup_dataset()
        if self.transport is None:
            self._setup_transport()
        if self.s.game == "sapo":
            self._setup_sapo()
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def _identity(self) -> str:
        """This node's peer ID: the given transport's, else the identity file's (made on first start)."""
        if self.transport is not None:
            return self.transport.peer_id
        from hivemind_exp.swarm.identity import ensure_identity, load_peer_id

        ensure_identity(self.s.identity_path)
        log.info("identity file %s", self.s.identity_path)
        return load_peer_id(self.s.identity_path)

    def _setup_telemetry(self, peer_id: str) -> None:
        from hivemind_exp.swarm.names import peer_name
        from hivemind_exp.common.telemetry import setup_telemetry

        self.telemetry = setup_telemetry("rl-swarm-trainer", {"peer_id": peer_id, "node_name": peer_name(peer_id)},
                                         prometheus_port=self.s.metrics_port or None)
        self.metrics = self.telemetry.trainer_metrics()
        if self.telemetry.prometheus_url:
            log.info("metrics at %s", self.telemetry.prometheus_url)

    def _setup_hub(self) -> None:
        if not self.s.push_to_hub:
            return
        from hivemind_exp.trainer.hub import HubError, check_write_token

        try:
            who = check_write_token(self.s.hf_token.get_secret_value(), self.s.hub_model_id)
        except HubError as err:
            raise NodeError(str(err)) from None
        log.info("will push the model to https://huggingface.co/%s as %s", self.s.hub_model_id, who)

    def _setup_chain(self, peer_id: str) -> None:
        if self.chain is None and self.s.chain_mode == "off":
            log.info("chain mode off: round/stage from the coordinator's DHT record; no on-chain submissions")
            return
        if self.chain is None:
            self.chain = self._register_on_chain(peer_id)
        from hivemind_exp.chain.outbox import OUTBOX_FILENAME, Outbox, OutboxWorker

        on_failure = self.metrics.record_submission_failure if self.metrics is not None else None
        self.outbox = Outbox(self.data_dir / OUTBOX_FILENAME)
        self.outbox_worker = OutboxWorker(self.outbox, self.chain, base_delay=self.s.outbox_base_delay,
                                          max_delay=self.s.outbox_max_delay, on_failure=on_failure).start()

    def _register_on_chain(self, peer_id: str) -> ChainClient:
        """Build the settings' chain client and register this peer (with proof of its key)."""
        from hivemind_exp.chain.client import build_client, ensure_registered
        from hivemind_exp.chain.errors import ChainError
        from hivemind_exp.chain.proof import PeerKey
        from hivemind_exp.swarm.identity import load_identity

        # The contract registers a peer ID only with a signature of the peer's own key.
        peer_key = PeerKey.from_identity(load_identity(self.s.identity_path))

        if self.s.chain_mode == "relay":
            from hivemind_exp.chain.login_client import wait_for_activation

            wait_for_activation(self.s.login_url, self.s.org_id, self.s.api_key_wait_seconds)
        chain = build_client(self.s)
        deadline = time.monotonic() + 120
        delay = 1.0
        while True:
            try:
                tx = ensure_registered(chain, peer_key)
                break
            except ChainError as err:
                if getattr(err, "error_name", None) == "PeerIdAlreadyRegistered" or time.monotonic() > deadline:
                    raise NodeError(f"cannot register peer {peer_id} on chain: {err}") from None
                log.warning("registering on chain failed (%s); retrying in %.0f s", err, delay)
                if self.stop.wait(delay):
                    raise NodeError("stopped while registering on chain") from None
                delay = min(delay * 2, 15)
        log.info("peer %s %s on chain %s (wallet %s)", peer_id, f"registered (tx {tx})" if tx else "already registered",
                 chain.contract_address, chain.account_address(peer_id))
        return chain

    def _setup_engine(self) -> None:
        from hivemind_exp.trainer.model_source import load_model_and_tokenizer
        from hivemind_exp.trainer.profiles import apply_device_env, choose_profile, detect_device
        from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams

        device = detect_device(self.s.device)
        apply_device_env(device)
        path, profile = choose_profile(self.s.model, device, self.s.config)
        log.info("device %s, profile %s", device, path)
        self.questions_per_round = self.s.questions_per_round or profile.questions_per_round
        # Each peer samples with its own seed: identical seeds make identical peers, and a swarm of
        # clones shares nothing worth learning from.
        peer_seed = int.from_bytes(hashlib.sha256(f"{self.s.swarm_seed}:{self.state.peer_id}".encode()).digest()[:4], "big")
        self.profile = profile
        self.peer_seed = peer_seed
        latest = self._latest_checkpoint()
        if self.engine is not None:  # given: its params are the caller's; only its weights resume here
            if latest is not None:
                log.info("resuming the given engine from checkpoint %s", latest)
                self.engine.restore(latest)
            self.engine.should_stop = self.stop.is_set
            return
        overrides: dict[str, Any] = {"seed": peer_seed, "num_threads": self.s.torch_threads}
        if self.s.game == "sapo":
            if self.s.sapo_completions is not None:
                overrides["num_generations"] = self.s.sapo_completions
            if self.s.sapo_max_completion_length is not None:
                overrides["max_completion_length"] = self.s.sapo_max_completion_length
        params = GRPOParams.from_mapping({**profile.grpo.model_dump(), **overrides}, source=str(path))
        if latest is not None:
            log.info("resuming from checkpoint %s (finished round %s stage %s)", latest,
                     *(self.state.last_done or ("?", "?")))
            self.engine = GRPOEngine.load(latest, params=params, device=device)
        else:
            model, tokenizer = load_model_and_tokenizer(self.s.model, dtype=profile.dtype, device=device)
            self.engine = GRPOEngine(model, tokenizer, params, device=device)
        self.engine.should_stop = self.stop.is_set

    def _setup_dataset(self) -> None:
        if self.s.game == "sapo":
            from hivemind_exp.sapo.tasks import ReasoningGymSource, TaskMix, TaskMixError

            try:
                mix = TaskMix.from_yaml(self.s.task_mix or self.profile.task_mix_file())
                self.task_source = ReasoningGymSource(mix, curriculum=self.s.curriculum)
            except TaskMixError as err:
                raise NodeError(f"task mix: {err}") from None
            if self.state.task_levels:
                self.task_source.load_state_dict(self.state.task_levels)
            log.info("problems: ReasoningGym tasks %s", ", ".join(self.task_source.tasks))
            if self.s.eval_every_rounds:
                self.held_out = self.task_source.held_out(self.s.eval_problems)
            return
        self.dataset = open_source(self.s.dataset, self.s.dataset_path, seed=self.s.swarm_seed)
        if self.s.eval_every_rounds:
            from hivemind_exp.game.evaluation import held_out_split

            _, self.held_out = held_out_split(list(self.dataset.problems()), self.s.eval_problems, self.s.swarm_seed)

    def _setup_transport(self) -> None:
        from hivemind_exp.swarm.hivemind_transport import HivemindTransport

        settings = self.s
        if not settings.initial_peers and settings.bootnode_file:
            settings = settings.model_copy(update=self._read_bootnode_file(Path(settings.bootnode_file)))
        if not settings.initial_peers and self.chain is not None:
            boot = self.chain.bootnodes()
            if boot:
                log.info("bootnodes from the chain: %s", ", ".join(boot))
                update: dict[str, Any] = {"initial_peers": boot}
                if settings.coordinator_peer_id is None and "/p2p/" in boot[0]:
                    # The contract lists the coordinator's bootnode first: trust its round-state records.
                    update["coordinator_peer_id"] = boot[0].rsplit("/p2p/", 1)[1]
                settings = settings.model_copy(update=update)
        self.transport = HivemindTransport.start(settings)
        log.info("joined the swarm; reachable at %s", ", ".join(self.transport.visible_maddrs()) or "(client mode)")

    def _setup_sapo(self) -> None:
        from hivemind_exp.sapo.game import SapoParams, SapoPlayer
        from hivemind_exp.sapo.rubric import sapo_prompt, sapo_rubric

        try:
            params = SapoParams(local_groups=self.s.sapo_local_groups, external_groups=self.s.sapo_external_groups,
                                policy=self.s.sapo_policy, collect_seconds=self.s.sapo_collect_seconds,
                                poll_seconds=min(self.s.poll_seconds, 2.0))
        except ValueError as err:
            raise NodeError(str(err)) from None
        self.sapo = SapoPlayer(self.engine, self.transport, self.task_source, sapo_rubric(), sapo_prompt, params,
                               node_seed=self.peer_seed, events=self.events, wait=self.stop.wait)
        log.info("SAPO game: %d own question(s) x %d completions per round, up to %d external group(s) (%s)",
                 params.local_groups, self.engine.params.num_generations, params.external_groups, params.policy)

    def _read_bootnode_file(self, path: Path, timeout: float = 300.0) -> dict[str, Any]:
        import json

        deadline = time.monotonic() + timeout
        while not path.is_file():
            if time.monotonic() > deadline or self.stop.is_set():
                raise NodeError(f"bootnode file {path} did not appear in {timeout:.0f} s: is the coordinator running "
                                "with --bootnode-file? Or give --initial-peers.")
            self._note_wait(("bootnode-file",), "waiting for the coordinator's address in %s", path)
            self.stop.wait(2.0)
        try:
            info = json.loads(path.read_text())
            update: dict[str, Any] = {"initial_peers": list(info["maddrs"])}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise NodeError(f"bootnode file {path} is unreadable ({err}); delete it and restart the coordinator") from None
        if self.s.coordinator_peer_id is None:
            update["coordinator_peer_id"] = str(info.get("peer_id"))
        log.info("coordinator from %s: %s", path, ", ".join(update["initial_peers"]))
        return update

    # ------------------------------------------------------------------ checkpoints
    def _checkpoints(self) -> list[Path]:
        root = self.data_dir / CHECKPOINTS
        if not root.is_dir():
            return []
        return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("r")),
                      key=lambda p: tuple(int(x) for x in p.name[1:].split("-s")))

    def _latest_checkpoint(self) -> Path | None:
        if self.state.checkpoint:
            path = self.data_dir / CHECKPOINTS / self.state.checkpoint
            if path.exists():
                return path
        return None

    def _save_checkpoint(self, round_no: int, stage: int) -> None:
        name = f"r{round_no:06d}-s{stage}"
        # The stage is published: mark it done first, so a node killed while the checkpoint below
        # is being written resumes from the previous complete checkpoint (one update behind)
        # without redoing and republishing the stage.
        self.state.last_done = (round_no, stage)
        self.state.save(self.state_path)
        self.engine.save(self.data_dir / CHECKPOINTS / name)
        self.state.checkpoint = name
        self.state.save(self.state_path)  # the state flips to the new checkpoint only once it is complete
        for old in self._checkpoints()[: -self.s.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        if self.metrics:
            self.metrics.mark_checkpoint()

    def _clean_checkpoint_leftovers(self) -> None:
        """Remove what a save killed half-way left behind (temp copies; old copies whose checkpoint is whole)."""
        root = self.data_dir / CHECKPOINTS
        if not root.is_dir():
            return
        for p in root.iterdir():
            if not p.name.startswith("."):
                continue
            if ".tmp-" in p.name:
                shutil.rmtree(p, ignore_errors=True)
            elif ".old-" in p.name:
                target = root / p.name[1:].split(".old-", 1)[0]
                if target.is_dir() and any(target.iterdir()):
                    shutil.rmtree(p, ignore_errors=True)

    # ------------------------------------------------------------------ clock
    def read_clock(self) -> StageClock | None:
        dht_state = None
        try:
            dht_state = self.transport.fetch_round_state(timeout=5)
        except Exception as err:  # noqa: BLE001 - the transport never should, but a read must not kill the node
            log.debug("round-state fetch failed: %s", err)
        # Playing another game's stages would publish records nobody reads: wait, and say why.
        self.foreign_game = dht_state.game if dht_state is not None and dht_state.game != self.s.game else None
        if self.foreign_game:
            return None
        if self.chain is not None:
            from hivemind_exp.chain.errors import ChainError

            try:
                r, s0 = self.chain.round_and_stage()
                # SAPO rounds have one stage; the coordinator moves the contract's 3-stage clock a
                # whole round at a time, so any chain stage is the round's only stage.
                stage = stages.from_chain(self.s.game, s0)
                deadline = None
                if dht_state is not None and (dht_state.round, dht_state.stage) == (r, stage):
                    deadline = dht_state.stage_deadline_unix
                return StageClock(r, stage, deadline, "chain")
            except ChainError as err:
                log.warning("chain round/stage unavailable (%s); using the DHT record", err)
        if dht_state is None:
            return None
        return StageClock(dht_state.round, dht_state.stage, dht_state.stage_deadline_unix, "dht")

    def _span(self, name: str, attributes: dict[str, Any]) -> Any:
        """A trace span when telemetry is on (exported with OTEL_TRACES_EXPORTER), else nothing."""
        if self.telemetry is None:
            return contextlib.nullcontext()
        return self.telemetry.span(name, attributes)

    def _note_wait(self, key: tuple[Any, ...], msg: str, *args: Any) -> None:
        if self._wait_note != key:
            log.info(msg, *args)
            self._wait_note = key

    # ------------------------------------------------------------------ main loop
    # Outcomes of `tick()`: these mean "nothing to do yet: wait a poll interval"; the others are
    # "trained", "skipped", "interrupted" (stopping) and FINISHED.
    WAITING = ("no-round-state", "other-game", "stale-stage", "stage-done")
    FINISHED = "finished"

    def run(self) -> int:
        while not self.stop.is_set():
            outcome = self.tick()
            if outcome == self.FINISHED:
                self.drain_outbox(timeout=120)
                return 0
            if outcome in self.WAITING:
                self.stop.wait(self.s.poll_seconds)
        return 0

    def tick(self) -> str:
        """One pass of the loop: read the clock, vote on finished rounds, play the stage if it is due."""
        clock = self.read_clock()
        if clock is None and self.foreign_game:
            self._note_wait(("game", self.foreign_game), "the coordinator plays the %s game but this node is set "
                            "to %s: restart it with --game %s", self.foreign_game, self.s.game, self.foreign_game)
            return "other-game"
        if clock is None:
            self._note_wait(("none",), "waiting for the coordinator's round state on the DHT")
            return "no-round-state"
        if self.metrics:
            self.metrics.set_round(clock.round, clock.stage)
        self._finish_rounds_before(clock.round)
        if self.s.max_rounds is not None and self.rounds_finished >= self.s.max_rounds:
            log.info("finished %d round(s) (--max-rounds); stopping", self.rounds_finished)
            return self.FINISHED
        now = self.clock()
        if clock.deadline is not None and now > clock.deadline + self.s.stage_stale_seconds:
            self._note_wait((clock.round, clock.stage, "stale"),
                            "round %d stage %d ended %.0f s ago and the coordinator has not moved on; waiting "
                            "(not training on a stale stage)", clock.round, clock.stage, now - clock.deadline)
            return "stale-stage"
        if self.state.done(clock.round, clock.stage):
            self._note_wait((clock.round, clock.stage, "done"), "round %d stage %d done; waiting for the next stage",
                            clock.round, clock.stage)
            return "stage-done"
        with self._span("stage", {"round": clock.round, "stage": clock.stage, "game": self.s.game}):
            if self.sapo is not None:
                played = self.run_sapo_round(clock.round, clock.deadline)
            else:
                played = self.run_stage(clock.round, clock.stage)
        if played:
            return "trained"
        return "skipped" if self.state.done(clock.round, clock.stage) else "interrupted"

    def round_problems(self, round_no: int) -> list[Problem]:
        exclude = frozenset(p.qid for p in self.held_out)
        return round_problems(self.dataset, self.s.swarm_seed, round_no, self.questions_per_round, exclude=exclude)

    def _fetch(self, round_no: int, stage: int) -> dict[str, dict[str, Any]]:
        got = self.transport.fetch_outputs(round_no, stage, timeout=self.s.dht_fetch_timeout)
        if self.metrics:
            self.metrics.record_fetched(sum(len(v) for v in got.values()))
        return got

    def run_stage(self, round_no: int, stage: int) -> bool:
        """Train and publish one stage; False when it had to be skipped."""
        from hivemind_exp.game.rewards import reward_context, stage_rubric
        from hivemind_exp.game.prompts import stage_prompt
        from hivemind_exp.swarm.records import OutputRecord

        problems = self.round_problems(round_no)
        answers: dict[str, dict[str, str]] = {p.qid: {} for p in problems}
        critiques: dict[str, dict[str, str]] = {p.qid: {} for p in problems}
        if stage >= 2:
            for peer, recs in self._fetch(round_no, 1).items():
                for qid, rec in recs.items():
                    if qid in answers:
                        answers[qid][peer] = rec.completion
            if not any(answers.values()):
                log.warning("round %d stage %d: no stage-1 answers reached this node; skipping to the next round",
                            round_no, stage)
                self._mark_skipped(round_no)
                return False
        if stage == 3:
            for peer, recs in self._fetch(round_no, 2).items():
                for qid, rec in recs.items():
                    if qid in critiques:
                        critiques[qid][peer] = rec.completion
        tokenizer = self.engine.tokenizer
        prompts = [stage_prompt(stage, p, answers[p.qid], critiques[p.qid], tokenizer=tokenizer) for p in problems]
        contexts = [reward_context(stage, p, answers[p.qid], critiques[p.qid]) for p in problems]
        rubric = stage_rubric(stage)
        peers_seen = len({peer for a in answers.values() for peer in a})
        if stage == 1:
            log.info("round %d stage 1: training on %d question(s)", round_no, len(problems))
        else:
            log.info("round %d stage %d: training on %d question(s) with %d peer answer(s) each", round_no, stage,
                     len(problems), peers_seen)
        t0 = time.monotonic()
        from hivemind_exp.trainer.grpo import StepInterrupted

        try:
            result = self.engine.step(prompts, lambda i, comps: rubric.score(comps, contexts[i]))
        except StepInterrupted as err:
            # Nothing was published or saved for this stage, so a restart redoes it from the checkpoint.
            log.info("round %d stage %d: %s after %.1f s; a restart redoes this stage", round_no, stage, err,
                     time.monotonic() - t0)
            return False
        step_seconds = time.monotonic() - t0
        log.info("round %d stage %d: GRPO step done in %.1f s: mean reward %.3f, loss %.4f, %d completion tokens "
                 "(%.1f tok/s)", round_no, stage, step_seconds, result.mean_reward, result.loss,
                 result.completion_tokens, result.tokens_per_second)
        self.events.emit("step", round=round_no, game="three-stage", stage=stage, peer=self.state.peer_id,
                         questions=len(problems), peers_seen=peers_seen, mean_reward=round(result.mean_reward, 4),
                         loss=result.loss, completion_tokens=result.completion_tokens,
                         gen_seconds=round(result.gen_seconds, 3), train_seconds=round(result.train_seconds, 3),
                         seconds=round(step_seconds, 3), skipped_groups=result.skipped_groups)
        if self.metrics:
            self.metrics.record_step(step_seconds, stage)
            self.metrics.record_loss(result.loss, stage)
            self.metrics.record_reward(stage, result.mean_reward)
            self.metrics.record_generation(result.completion_tokens, result.gen_seconds + result.train_seconds)

        from hivemind_exp.game.parser import stage_parser
        from hivemind_exp.game.answers import extract_number

        parser = stage_parser(stage)
        outputs = {}
        for prob, comps, rewards in zip(problems, result.completions, result.rewards):
            best = max(range(len(comps)), key=lambda k: rewards[k])
            parsed = parser.parse(comps[best])
            final = extract_number(parsed.get("answer")) if stage != 2 else parsed.get("identify")
            outputs[prob.qid] = OutputRecord(completion=comps[best], final_answer=(final or None) and str(final)[:1024],
                                             reward=float(rewards[best]),
                                             meta={"stage": stage, "question": prob.question[:300]})
        published = self.transport.publish_outputs(round_no, stage, outputs)
        self.transport.publish_reward(round_no, stage, float(result.mean_reward))
        if self.metrics:
            self.metrics.record_published(len(outputs) + 1)
        if not published:
            log.warning("round %d stage %d: some outputs were not confirmed stored by the DHT", round_no, stage)
        if self.outbox is not None:
            from hivemind_exp.chain.rewards import points_to_chain

            self.outbox.enqueue_reward(round_no, stages.to_chain(self.s.game, stage), points_to_chain(result.mean_reward),
                                       self.state.peer_id)
            self.outbox_worker.wake()
        self.state.total_steps += 1
        self._save_checkpoint(round_no, stage)
        return True

    def run_sapo_round(self, round_no: int, deadline: float | None) -> bool:
        """Play one SAPO round (sample, share, take, train), publish, queue the reward, checkpoint."""
        from hivemind_exp.trainer.grpo import StepInterrupted

        t0 = time.monotonic()
        try:
            out = self.sapo.play_round(round_no, deadline)
        except StepInterrupted as err:
            log.info("round %d: %s after %.1f s; a restart redoes this round", round_no, err, time.monotonic() - t0)
            return False
        seconds = time.monotonic() - t0
        log.info("round %d: SAPO step done in %.1f s: %d own + %d external group(s) (%d with signal; %d valid seen), "
                 "mean reward %.3f, loss %.4f, %d completion tokens", round_no, seconds, len(out.local),
                 len(out.taken), out.trained_external, out.candidates, out.mean_reward, out.loss,
                 out.completion_tokens)
        if self.metrics:
            self.metrics.record_step(seconds, 1)
            self.metrics.record_loss(out.loss, 1)
            self.metrics.record_reward(1, out.mean_reward)
            self.metrics.record_generation(out.completion_tokens, out.gen_seconds + out.train_seconds)
            self.metrics.record_published(len(out.local) + 1)
            self.metrics.record_fetched(out.candidates)
        self.transport.publish_reward(round_no, 1, float(out.mean_reward))
        # The heartbeat thread carries these to dashboards from its next beat on.
        self.sapo_stats = self.sapo.stats(out, self.clock(), sum(self.transport.drop_counts().values()))
        if self.outbox is not None:
            from hivemind_exp.chain.rewards import points_to_chain

            self.outbox.enqueue_reward(round_no, stages.to_chain(self.s.game, 1), points_to_chain(out.mean_reward),
                                       self.state.peer_id)
            self.outbox_worker.wake()
        if self.task_source is not None and self.s.curriculum:
            for g in out.local:
                self.task_source.observe(g.problem.spec.task, self.sapo.correct_share(g))
            self.state.task_levels = self.task_source.state_dict()
        self.state.round_winners[round_no] = list(out.winners)[:MAX_WINNERS_PER_VOTE]
        self.state.total_steps += 1
        self._save_checkpoint(round_no, 1)
        return True

    def _vote_sapo(self, round_no: int) -> list[str]:
        winners = self.state.round_winners.pop(round_no, [])
        log.info("round %d winners: %s", round_no, winners or "none (no group scored above 0)")
        self.transport.publish_winners(round_no, winners)
        if winners and self.outbox is not None:
            self.outbox.enqueue_winners(round_no, winners, self.state.peer_id)
            self.outbox_worker.wake()
        return winners

    def _mark_skipped(self, round_no: int) -> None:
        self.state.last_done = (round_no, self.s.stages_per_round)
        self.state.winners_done.append(round_no)  # nothing to vote on for a round we sat out
        self.state.save(self.state_path)

    def _finish_rounds_before(self, current_round: int) -> None:
        """Pick winners of the rounds whose third stage this node played and that are now over."""
        last = self.state.last_done
        if last is None:
            return
        r, s = last
        if s == self.s.stages_per_round and r < current_round and r not in self.state.winners_done:
            if self.sapo is not None:
                self._vote_sapo(r)
            else:
                self.pick_winners(r)
            self.state.winners_done.append(r)
            self.state.save(self.state_path)
            self.rounds_finished += 1
            self._after_round(r)

    def pick_winners(self, round_no: int) -> list[str]:
        """Score the swarm's final answers of a finished round and vote (DHT always, chain when any)."""
        from hivemind_exp.game.winners import pick_winners

        finals = {peer: {qid: rec.completion for qid, rec in recs.items()}
                  for peer, recs in self._fetch(round_no, 3).items()}
        result = pick_winners(finals, self.round_problems(round_no), tie_salt=str(round_no))
        winners = list(result.winners)[:MAX_WINNERS_PER_VOTE]
        log.info("round %d winners: %s (scores: %s)", round_no, winners or "none (no peer answered correctly)",
                 ", ".join(f"{p[-6:]}={sc.score:.2f}" for p, sc in sorted(result.scores.items())))
        # An empty vote on the DHT still tells the swarm this peer scored the round.
        self.transport.publish_winners(round_no, winners)
        if winners and self.outbox is not None:
            self.outbox.enqueue_winners(round_no, winners, self.state.peer_id)
            self.outbox_worker.wake()
        return winners

    def _after_round(self, round_no: int) -> None:
        if self.s.eval_every_rounds and (round_no + 1) % self.s.eval_every_rounds == 0 and self.held_out:
            if self.sapo is not None:
                from hivemind_exp.sapo.evaluation import evaluate_tasks

                res = evaluate_tasks(self.engine, self.held_out, self.task_source, self.sapo.rubric, self.sapo.prompt)
                self.events.emit("eval", round=round_no, game="sapo", peer=self.state.peer_id, n=res.n,
                                 accuracy=res.accuracy, format_rate=res.format_rate, per_task=res.per_task)
            else:
                from hivemind_exp.game.evaluation import evaluate

                res = evaluate(self.engine.model, self.engine.tokenizer, self.held_out,
                               max_new_tokens=self.engine.params.max_completion_length)
            log.info("round %d evaluation on %d held-out problems: accuracy %.3f, format %.3f", round_no, res.n,
                     res.accuracy, res.format_rate)
            from hivemind_exp.swarm.records import EvalSummary

            # The heartbeat thread carries it to dashboards from its next beat on.
            self.evaluation = EvalSummary(round=round_no, accuracy=float(res.accuracy),
                                          format_rate=float(res.format_rate), problems=res.n, at=self.clock())
            if self.metrics:
                self.metrics.record_eval(res.accuracy, res.format_rate)
        if self.s.push_to_hub and self.state.checkpoint:
            from hivemind_exp.trainer.hub import push_checkpoint

            try:
                push_checkpoint(self.data_dir / CHECKPOINTS / self.state.checkpoint, self.s.hub_model_id,
                                self.s.hf_token.get_secret_value(), f"rl-swarm round {round_no}")
            except Exception as err:  # noqa: BLE001 - a failed push must not stop training
                log.warning("push to the hub failed: %s", err)

    def drain_outbox(self, timeout: float) -> bool:
        """Wait (bounded) until every queued chain submission is confirmed or failed."""
        if self.outbox is None:
            return True
        deadline = time.monotonic() + timeout
        while (pending := self.outbox.counts().pending) and time.monotonic() < deadline and not self.stop.is_set():
            self._note_wait(("drain", pending), "waiting for %d chain submission(s) to confirm", pending)
            self.outbox_worker.wake()
            self.stop.wait(1.0)
        counts = self.outbox.counts()
        if counts.pending:
            log.warning("%d chain submission(s) still pending; they stay queued in %s and are sent on the next start",
                        counts.pending, self.outbox.path)
        return counts.pending == 0

    # ------------------------------------------------------------------ background
    def _heartbeat_loop(self) -> None:
        from hivemind_exp.swarm.names import peer_name

        wallet = None
        if self.chain is not None:
            try:
                wallet = self.chain.account_address(self.state.peer_id)
            except Exception:  # noqa: BLE001 - the wallet is optional information
                wallet = None
        name = peer_name(self.state.peer_id)
        while not self.stop.is_set():
            try:
                self.heartbeat_once(name, wallet)
            except Exception as err:  # noqa: BLE001 - heartbeats retry on the next tick
                log.debug("heartbeat failed: %s", err)
            self.stop.wait(self.s.heartbeat_seconds)

    def heartbeat_once(self, name: str | None = None, wallet: str | None = None) -> None:
        """Announce this node (with its latest evaluation and SAPO stats) and refresh the gauges."""
        self.transport.heartbeat(name=name, wallet=wallet, evaluation=self.evaluation, sapo=self.sapo_stats)
        if not self.metrics:
            return
        self.metrics.set_dht_peers(len(self.transport.list_peers(timeout=5)))
        drops = self.transport.drop_counts()
        for reason, n in drops.items():
            delta = n - self._drops_reported.get(reason, 0)
            if delta > 0:
                self.metrics.record_dropped(reason, delta)
        self._drops_reported = dict(drops)
        if self.outbox is not None:
            self.metrics.set_outbox_depth(self.outbox.counts().pending)

    def shutdown(self) -> None:
        self.stop.set()
        if self.outbox_worker is not None:
            self.outbox_worker.stop(timeout=10)
        from hivemind_exp.swarm.transport import close_quietly

        close_quietly(self.transport)
        if self.telemetry is not None:
            self.telemetry.shutdown()
