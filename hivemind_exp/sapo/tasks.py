"""ReasoningGym as a problem source: a weighted task mix, specs instead of claims, held-out seeds.

A question travels between peers as a `TaskSpec` (task, config hash, seed, index); every
receiver with the same `TaskMix` regenerates the question and its true answer itself
(`ReasoningGymSource.regenerate`), so nobody has to trust an answer shipped by a sender.

Seeds and why they are split the way they are: reasoning-gym builds item `i` of a dataset
seeded `s` from `random.Random(s + i)`, so what identifies an item is the *key* `s + i`, not
the pair. Training specs keep their key below `HELD_OUT_BASE` (2**30) and held-out specs keep
it at or above, so no training spec can ever reach a held-out item. On top of that the first
`held_out_reserve` held-out questions of the mix are reserved *by text*: small task spaces
(two one-digit terms have only a few hundred sums) repeat questions under other keys, and
`draw` / `regenerate` skip or refuse those, so held-out accuracy measures unseen questions.

Curriculum: a mix entry may list difficulty `levels` (config overrides merged over its
`config`). The level is part of the effective config and hence of `config_hash`, so a
receiver regenerates a spec of any level. `observe(task, accuracy)` moves the sender's
own level; its state is a few numbers per task (`state_dict` / `load_state_dict`).

reasoning_gym is imported inside functions: importing it takes ~2 s and `rl-swarm --help`
must stay instant.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SEED_LIMIT = 2**31  # specs carry 0 <= seed < 2**31
INDEX_LIMIT = 2**20  # and 0 <= index < 2**20
HELD_OUT_BASE = 2**30  # item keys (seed + index) at or above this are held out
HELD_OUT_SEED = HELD_OUT_BASE  # the default held-out seed
TRAIN_SEED_LIMIT = HELD_OUT_BASE - INDEX_LIMIT  # draw() picks seeds below this: key < HELD_OUT_BASE
DATASET_SIZE = INDEX_LIMIT  # the size every dataset is built with (some pre-draw per-item choices)
VALIDATION_ITEMS = 4  # items per task and level whose own answer must score 1.0 at start
_CONTROL_ITEMS = 32  # training items per task and level checked against the held-out reservation
_MAX_SKIPS = 1000  # consecutive reserved questions before draw() gives up (a task space too small)
_SOURCE_KEYS = ("seed", "size")  # set by the source, never by the mix


class TaskMixError(ValueError):
    """A bad task mix; the message names the task/key and the fix."""


class SpecError(ValueError):
    """A spec this node cannot regenerate (unknown task, wrong config hash, bad seed/index)."""


@dataclass(frozen=True)
class TaskSpec:
    """What travels over the DHT instead of question + answer."""

    task: str  # reasoning-gym dataset name, e.g. "chain_sum"
    config_hash: str  # 16 hex chars: sha256 of the canonical JSON of the effective config
    seed: int  # 0 <= seed < 2**31
    index: int  # 0 <= index < 2**20

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "config_hash": self.config_hash, "seed": self.seed, "index": self.index}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        """A spec from its wire form; SpecError names a missing or mistyped field."""
        if not isinstance(data, Mapping):
            raise SpecError(f"a spec must be a mapping with task, config_hash, seed, index; got {type(data).__name__}")
        values = {}
        for name, kind in (("task", str), ("config_hash", str), ("seed", int), ("index", int)):
            value = data.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise SpecError(f"spec field {name!r} must be {kind.__name__}, got {value!r}")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class TaskProblem:
    spec: TaskSpec
    question: str
    answer: str  # the generator's stored answer
    entry: dict[str, Any] = field(repr=False, compare=False)  # the reasoning-gym item, for score_answer; never sent
    level: int = 0  # the curriculum level of the spec's config


def config_hash(task: str, config: Mapping[str, Any]) -> str:
    """16 hex chars identifying a task's effective config (order of keys does not matter)."""
    canonical = json.dumps({"task": task, "config": config}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def is_held_out_key(seed: int, index: int = 0) -> bool:
    return seed + index >= HELD_OUT_BASE


# ---------------------------------------------------------------------------------------
# The mix


class CurriculumSettings(BaseModel):
    """When a task's level moves: mean accuracy of the last `window` observations."""

    model_config = ConfigDict(extra="forbid")
    up: float = Field(0.7, gt=0, le=1, description="mean recent accuracy above which the level rises")
    down: float = Field(0.15, ge=0, lt=1, description="mean recent accuracy below which the level falls")
    window: int = Field(4, ge=1, le=64, description="observations averaged (e.g. rounds) before a move")

    @model_validator(mode="after")
    def _ordered(self) -> CurriculumSettings:
        if self.down >= self.up:
            raise ValueError(f"curriculum.down ({self.down}) must be below curriculum.up ({self.up})")
        return self


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="reasoning-gym dataset name, e.g. chain_sum")
    weight: float = Field(gt=0, description="relative share of drawn questions")
    config: dict[str, Any] = Field(default_factory=dict, description="the dataset's config keys (not seed/size)")
    levels: list[dict[str, Any]] = Field(
        default_factory=list,
        description="curriculum levels, easiest first: config overrides merged over `config`; none = one level",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("task name must not be empty")
        return v

    @field_validator("weight")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("weight must be a finite number > 0")
        return v

    @property
    def n_levels(self) -> int:
        return max(1, len(self.levels))

    def effective_config(self, level: int = 0) -> dict[str, Any]:
        if not 0 <= level < self.n_levels:
            raise ValueError(f"task {self.name} has levels 0..{self.n_levels - 1}, not {level}")
        merged = dict(self.config)
        if self.levels:
            merged.update(self.levels[level])
        return merged


class TaskMix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[TaskEntry] = Field(min_length=1, description="the tasks, their weights and configs")
    curriculum: CurriculumSettings = CurriculumSettings()
    held_out_reserve: int = Field(
        128, ge=0, le=100_000,
        description="questions of held_out() (default seed) that draw() never yields, matched by text",
    )

    @model_validator(mode="after")
    def _unique(self) -> TaskMix:
        seen: set[str] = set()
        for entry in self.tasks:
            if entry.name in seen:
                raise ValueError(f"task {entry.name!r} is listed twice; merge the entries (one weight per task)")
            seen.add(entry.name)
        return self

    def entry(self, task: str) -> TaskEntry:
        for e in self.tasks:
            if e.name == task:
                return e
        raise KeyError(task)

    @classmethod
    def from_mapping(cls, data: Any, where: str = "task mix") -> TaskMix:
        """From a mapping `{tasks: [...], curriculum: {...}}` or a bare list of task entries."""
        if isinstance(data, list):
            data = {"tasks": data}
        if not isinstance(data, Mapping):
            raise TaskMixError(f"{where} must be a mapping with a 'tasks' list, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            problems = "; ".join(_describe(err_item, data) for err_item in err.errors())
            raise TaskMixError(f"{where} is invalid: {problems}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> TaskMix:
        import yaml

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise TaskMixError(f"task mix file {path} does not exist") from None
        except yaml.YAMLError as err:
            raise TaskMixError(f"task mix file {path} is not valid YAML: {err}") from None
        return cls.from_mapping(raw, where=f"task mix {path}")


def _describe(err: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    loc = list(err.get("loc", ()))
    where = ".".join(map(str, loc)) or "mix"
    if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):  # name the task, not only its position
        try:
            name = data["tasks"][loc[1]].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = None
        if name:
            where += f" (task {name})"
    return f"{where}: {err.get('msg')}"


# ---------------------------------------------------------------------------------------
# The source


@dataclass(frozen=True)
class _Config:
    task: str
    level: int
    config: dict[str, Any]
    hash: str


class ReasoningGymSource:
    """Problems from a reasoning-gym task mix, as regenerable specs."""

    name = "reasoning-gym"

    def __init__(self, mix: TaskMix, curriculum: bool = False):
        if not isinstance(mix, TaskMix):
            raise TypeError(f"mix must be a TaskMix (TaskMix.from_yaml / from_mapping), got {type(mix).__name__}")
        self.mix = mix
        self.curriculum = curriculum
        self._tasks = [e.name for e in mix.tasks]
        self._weights = [e.weight for e in mix.tasks]
        self._configs: dict[tuple[str, str], _Config] = {}  # (task, hash) -> config, every level of every task
        self._base: dict[tuple[str, int], _Config] = {}  # (task, level) -> config
        self._datasets: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
        self._levels = {t: 0 for t in self._tasks}
        self._recent: dict[str, list[float]] = {t: [] for t in self._tasks}
        self._reserved: frozenset[str] = frozenset()
        self.regenerate = functools.lru_cache(maxsize=8192)(self._regenerate)  # peers share many specs
        self._validate()

    # -- start-up checks ---------------------------------------------------------------

    def _validate(self) -> None:
        """Every task name, config key, level and stored answer checked once, before any round."""
        from reasoning_gym.factory import DATASETS

        for entry in self.mix.tasks:
            if entry.name not in DATASETS:
                close = difflib.get_close_matches(entry.name, sorted(DATASETS), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else "; see reasoning_gym.factory.DATASETS"
                raise TaskMixError(f"unknown reasoning-gym task {entry.name!r}{hint}")
            _, config_cls = DATASETS[entry.name]
            accepted = sorted(f for f in config_cls.__dataclass_fields__ if f not in _SOURCE_KEYS)
            for level in range(entry.n_levels):
                cfg = entry.effective_config(level)
                where = f"task {entry.name}" + (f" level {level}" if entry.levels else "")
                for key in cfg:
                    if key in _SOURCE_KEYS:
                        raise TaskMixError(f"{where}: config key {key!r} is set by the source (from the spec); remove it")
                    if key not in accepted:
                        close = difflib.get_close_matches(key, accepted, n=2, cutoff=0.6)
                        hint = f" (did you mean {', '.join(close)}?)" if close else ""
                        raise TaskMixError(
                            f"{where}: config key {key!r} is not accepted by {config_cls.__name__}{hint}; "
                            f"accepted keys: {', '.join(accepted)}")
                try:
                    digest = config_hash(entry.name, cfg)
                except (TypeError, ValueError) as err:
                    raise TaskMixError(f"{where}: config values must be plain YAML/JSON values: {err}") from None
                conf = _Config(entry.name, level, cfg, digest)
                if (entry.name, digest) in self._configs:
                    raise TaskMixError(f"{where}: same config as level {self._configs[(entry.name, digest)].level}; "
                                       "levels must differ")
                self._configs[(entry.name, digest)] = conf
                self._base[(entry.name, level)] = conf
                self._check_answers(conf, where)
        self._reserved = frozenset(p.question for p in self.held_out(self.mix.held_out_reserve))
        self._check_reservation()

    def _check_answers(self, conf: _Config, where: str) -> None:
        """Refuse a task that would score its rollouts 0 whatever they say."""
        for index in range(VALIDATION_ITEMS):
            seed = 12_345  # a training seed: the check reads items no held-out set uses
            try:
                ds = self._dataset(conf, seed)
                item = ds[index]
            except Exception as err:  # config.validate() asserts, generators raise on bad ranges
                raise TaskMixError(f"{where}: reasoning-gym cannot generate items with config {conf.config}: "
                                   f"{type(err).__name__}: {err}; fix the config values") from None
            answer = item.get("answer")
            if not isinstance(answer, str) or not answer.strip():
                raise TaskMixError(
                    f"{where}: its items carry no stored answer ({answer!r}), so this node cannot check that "
                    "its score_answer ever gives 1.0 and completions could all score 0; remove it from the mix")
            try:
                own = float(ds.score_answer(answer=answer, entry=item))
            except Exception as err:
                raise TaskMixError(f"{where}: score_answer fails on the generator's own answer: "
                                   f"{type(err).__name__}: {err}; remove it from the mix") from None
            if not own == 1.0:
                raise TaskMixError(f"{where}: score_answer gives the generator's own answer {answer!r} a score of "
                                   f"{own} instead of 1.0 (item {index}); remove it from the mix")

    def _check_reservation(self) -> None:
        """A task whose training questions are mostly held-out ones has too small a space."""
        if not self._reserved:
            return
        for conf in self._base.values():
            ds = self._dataset(conf, 99_991)
            hits = sum(ds[i]["question"] in self._reserved for i in range(_CONTROL_ITEMS))
            if hits > _CONTROL_ITEMS // 2:
                raise TaskMixError(
                    f"task {conf.task} level {conf.level}: {hits}/{_CONTROL_ITEMS} sampled training questions are "
                    f"among the {len(self._reserved)} reserved held-out questions, the task has too few distinct "
                    "questions; make it harder, lower its weight or lower held_out_reserve")

    # -- generation ----------------------------------------------------------------------

    def _dataset(self, conf: _Config, seed: int) -> Any:
        """Datasets cached per (task, config, seed): a round's items share one."""
        import reasoning_gym

        key = (conf.task, conf.hash, seed)
        ds = self._datasets.get(key)
        if ds is None:
            ds = reasoning_gym.create_dataset(conf.task, seed=seed, size=DATASET_SIZE, **conf.config)
            self._datasets[key] = ds
            if len(self._datasets) > 256:
                self._datasets.popitem(last=False)
        else:
            self._datasets.move_to_end(key)
        return ds

    def _make(self, conf: _Config, seed: int, index: int) -> TaskProblem:
        item = self._dataset(conf, seed)[index]
        spec = TaskSpec(conf.task, conf.hash, seed, index)
        return TaskProblem(spec=spec, question=str(item["question"]), answer=str(item["answer"]), entry=item,
                           level=conf.level)

    def _pick(self, rng: random.Random) -> str:
        return rng.choices(self._tasks, weights=self._weights, k=1)[0]

    def draw(self, node_seed: int, round_no: int, n: int) -> list[TaskProblem]:
        """`n` training problems for one node and round: deterministic in (node_seed, round_no, n)
        and the curriculum levels; other node seeds give other questions; never held out."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if n > INDEX_LIMIT // 2:
            raise ValueError(f"n must be at most {INDEX_LIMIT // 2} per round, got {n}")
        digest = hashlib.sha256(f"rg-draw:{int(node_seed)}:{int(round_no)}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        seed = rng.randrange(TRAIN_SEED_LIMIT)
        out: list[TaskProblem] = []
        index = 0
        skips = 0
        while len(out) < n:
            task = self._pick(rng)
            conf = self._base[(task, self._levels[task])]
            problem = self._make(conf, seed, index)
            index += 1
            if problem.question in self._reserved:
                skips += 1
                if skips > _MAX_SKIPS or index >= INDEX_LIMIT:
                    raise RuntimeError(f"draw: {skips} questions in a row were reserved held-out ones "
                                       f"(task {task}); the mix has too few distinct questions")
                continue
            skips = 0
            out.append(problem)
        return out

    def _regenerate(self, spec: TaskSpec, allow_held_out: bool = False) -> TaskProblem:
        """The problem a spec names, rebuilt here; SpecError when this node cannot (or must not:
        a held-out spec, unless `allow_held_out`) rebuild it. Cached: peers share many specs."""
        if not isinstance(spec, TaskSpec):
            raise SpecError(f"expected a TaskSpec, got {type(spec).__name__}")
        if not isinstance(spec.seed, int) or isinstance(spec.seed, bool) or not 0 <= spec.seed < SEED_LIMIT:
            raise SpecError(f"spec seed {spec.seed!r} is outside 0..{SEED_LIMIT - 1}")
        if not isinstance(spec.index, int) or isinstance(spec.index, bool) or not 0 <= spec.index < INDEX_LIMIT:
            raise SpecError(f"spec index {spec.index!r} is outside 0..{INDEX_LIMIT - 1}")
        if self.is_held_out_seed(spec.seed) and not allow_held_out:
            raise SpecError(f"spec seed {spec.seed} is a held-out seed (>= {HELD_OUT_BASE}); no node trains on those")
        if not self.is_held_out_seed(spec.seed) and is_held_out_key(spec.seed, spec.index):
            raise SpecError(f"spec seed {spec.seed} + index {spec.index} reaches the held-out range "
                            f"(>= {HELD_OUT_BASE}); training specs keep seed + index below it")
        if spec.task not in self._levels:
            raise SpecError(f"spec task {spec.task!r} is not in this node's mix ({', '.join(self._tasks)})")
        conf = self._configs.get((spec.task, spec.config_hash))
        if conf is None:
            raise SpecError(f"spec config hash {spec.config_hash!r} matches no level of task {spec.task} in this "
                            "node's mix (the sender runs a different mix or reasoning-gym config)")
        problem = self._make(conf, spec.seed, spec.index)
        if not self.is_held_out_seed(spec.seed) and problem.question in self._reserved:
            raise SpecError(f"spec {spec.task}/{spec.seed}/{spec.index} regenerates a reserved held-out question")
        return problem

    def score(self, problem: TaskProblem, answer: str | None) -> float:
        """The task's own score_answer, in [0, 1]; no answer scores 0."""
        if answer is None or not str(answer).strip():
            return 0.0
        conf = self._configs.get((problem.spec.task, problem.spec.config_hash))
        if conf is None:
            raise SpecError(f"problem of task {problem.spec.task} config {problem.spec.config_hash} "
                            "is not from this source's mix")
        ds = self._dataset(conf, problem.spec.seed)
        try:
            value = float(ds.score_answer(answer=str(answer), entry=problem.entry))
        except Exception:  # a model's garbage must not stop training; own answers were checked at start
            return 0.0
        if not math.isfinite(value):
            return 0.0
        return min(1.0, max(0.0, value))

    def held_out(self, n: int, seed: int = HELD_OUT_SEED, levels: Mapping[str, int] | None = None) -> list[TaskProblem]:
        """`n` held-out problems from the same mix, shared out by weight (largest remainder);
        level 0 of every task unless `levels` says otherwise. Deterministic in (n, seed, levels)."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if not self.is_held_out_seed(seed) or seed + n > SEED_LIMIT:
            raise ValueError(f"held-out seed must be in {HELD_OUT_BASE}..{SEED_LIMIT - 1 - n}, got {seed}")
        if n > INDEX_LIMIT:
            raise ValueError(f"n must be at most {INDEX_LIMIT}, got {n}")
        levels = dict(levels or {})
        total = sum(self._weights)
        shares = [n * w / total for w in self._weights]
        counts = [int(s) for s in shares]
        order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - counts[i]), i))
        for i in order[: n - sum(counts)]:
            counts[i] += 1
        by_task = []
        for task, count in zip(self._tasks, counts, strict=True):
            conf = self._base.get((task, levels.get(task, 0)))
            if conf is None:
                raise ValueError(f"task {task} has no level {levels.get(task)}")
            by_task.append([self._make(conf, seed, i) for i in range(count)])
        # Interleave so any prefix of the list covers the tasks in proportion.
        out: list[TaskProblem] = []
        for i in range(max(counts, default=0)):
            out.extend(group[i] for group in by_task if i < len(group))
        return out

    @staticmethod
    def is_held_out_seed(seed: int) -> bool:
        return isinstance(seed, int) and HELD_OUT_BASE <= seed < SEED_LIMIT

    # -- curriculum ----------------------------------------------------------------------

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def level(self, task: str) -> int:
        return self._levels[self._known(task)]

    def levels(self) -> dict[str, int]:
        return dict(self._levels)

    def _known(self, task: str) -> str:
        if task not in self._levels:
            raise KeyError(f"task {task!r} is not in the mix ({', '.join(self._tasks)})")
        return task

    def observe(self, task: str, accuracy: float) -> int:
        """Record the node's accuracy on `task` (e.g. one round's); returns the task's level.

        With the curriculum on, once `window` observations are in, their mean above `up`
        raises the level and below `down` lowers it; a move starts a fresh window.
        """
        self._known(task)
        if not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy) or not 0 <= accuracy <= 1:
            raise ValueError(f"accuracy must be a number in [0, 1], got {accuracy!r}")
        if not self.curriculum:
            return self._levels[task]
        settings = self.mix.curriculum
        recent = self._recent[task]
        recent.append(float(accuracy))
        del recent[: -settings.window]
        if len(recent) == settings.window:
            mean = sum(recent) / len(recent)
            top = self.mix.entry(task).n_levels - 1
            move = 1 if mean > settings.up and self._levels[task] < top else -1 if mean < settings.down and self._levels[task] > 0 else 0
            if move:
                self._levels[task] += move
                recent.clear()
        return self._levels[task]

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "levels": dict(self._levels), "recent": {t: list(v) for t, v in self._recent.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore levels and recent accuracies; a task of the checkpoint missing from the mix is an error."""
        if not isinstance(state, Mapping) or state.get("version") != 1:
            raise ValueError("curriculum state must be a mapping with version 1 (from ReasoningGymSource.state_dict)")
        levels = state.get("levels", {})
        recent = state.get("recent", {})
        if not isinstance(levels, Mapping) or not isinstance(recent, Mapping):
            raise ValueError("curriculum state: 'levels' and 'recent' must be mappings")
        new_levels = dict(self._levels)
        new_recent = {t: list(v) for t, v in self._recent.items()}
        for task, level in levels.items():
            if task not in new_levels:
                raise ValueError(f"curriculum state has task {task!r}, which the mix does not list; "
                                 "add it back or start without the saved state")
            top = self.mix.entry(task).n_levels - 1
            if not isinstance(level, int) or not 0 <= level <= top:
                raise ValueError(f"curriculum state: level {level!r} of task {task} is outside 0..{top}")
            new_levels[task] = level
        for task, values in recent.items():
            if task not in new_recent:
                raise ValueError(f"curriculum state has task {task!r}, which the mix does not list")
            if not isinstance(values, Sequence) or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values):
                raise ValueError(f"curriculum state: recent accuracies of {task} must be numbers in [0, 1]")
            new_recent[task] = [float(v) for v in values][-self.mix.curriculum.window:]
        self._levels = new_levels
        self._recent = new_recent
