"""Dataset sources: where a round's math problems come from.

- ``hub``:       GSM8K from the Hugging Face hub (``openai/gsm8k``), when reachable.
- ``jsonl``:     a local JSONL file in GSM8K format (``{"question": ..., "answer": "... #### 72"}``).
- ``generated``: a built-in generator of multi-step grade-school word problems with exact
                 integer answers (many templates, seeded), for machines with neither.

`round_problems` makes the question set a pure function of (swarm seed, round), so every
peer answers the same questions without talking to anyone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    qid: str  # stable short hash of the question text
    question: str
    answer: str  # canonical final numeric answer, e.g. "72" or "-3.5"
    solution: str = ""


def question_id(question: str) -> str:
    return hashlib.sha256(question.strip().encode("utf-8")).hexdigest()[:16]



class DatasetError(RuntimeError):
    """The dataset cannot be used; the message says why and what to do."""


class DatasetSource(Protocol):
    name: str

    def problems(self) -> Sequence[Problem]: ...


def gsm8k_final_answer(answer_field: str) -> str | None:
    """The number after '####' in a GSM8K answer, normalised ('1,234' -> '1234')."""
    if "####" not in answer_field:
        return None
    tail = answer_field.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
    if not tail:
        return None
    try:
        value = float(tail)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else tail


class JsonlSource:
    """Local JSONL in GSM8K format. Bad lines are reported by number and skipped."""

    name = "jsonl"

    def __init__(self, path: Path | str, limit: int | None = None):
        self.path = Path(path)
        self.limit = limit
        self.skipped: list[tuple[int, str]] = []
        self._problems: list[Problem] | None = None

    def problems(self) -> Sequence[Problem]:
        if self._problems is None:
            self._problems = self._load()
        return self._problems

    def _load(self) -> list[Problem]:
        if not self.path.is_file():
            raise DatasetError(f"Dataset file {self.path} does not exist. Fix --dataset-path / RLSWARM_DATASET_PATH.")
        out: list[Problem] = []
        seen: set[str] = set()
        with self.path.open("r", encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                reason = None
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    reason = f"not JSON ({err.msg})"
                    row = None
                if row is not None:
                    if not isinstance(row, dict):
                        reason = "not a JSON object"
                    elif not isinstance(row.get("question"), str) or not row["question"].strip():
                        reason = "missing string field 'question'"
                    elif not isinstance(row.get("answer"), (str, int, float)):
                        reason = "missing field 'answer'"
                if reason is None:
                    answer_field = str(row["answer"])
                    final = gsm8k_final_answer(answer_field) if "####" in answer_field else _plain_number(answer_field)
                    if final is None:
                        reason = "answer has no final number (expected '... #### 42' or a number)"
                if reason is not None:
                    self.skipped.append((lineno, reason))
                    log.warning("%s:%d skipped: %s", self.path, lineno, reason)
                    continue
                question = row["question"].strip()
                qid = question_id(question)
                if qid in seen:
                    continue
                seen.add(qid)
                out.append(Problem(qid=qid, question=question, answer=final, solution=answer_field))
                if self.limit and len(out) >= self.limit:
                    break
        if not out:
            raise DatasetError(
                f"Dataset file {self.path} has no usable line ({len(self.skipped)} skipped). "
                "Each line must be a JSON object with 'question' and 'answer' ('... #### 42')."
            )
        if self.skipped:
            log.warning("%s: %d line(s) skipped, %d problems loaded", self.path, len(self.skipped), len(out))
        return out


def _plain_number(text: str) -> str | None:
    try:
        value = float(text.replace(",", "").strip())
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else str(value)


class HubSource:
    """GSM8K (`openai/gsm8k`, config `main`, split `train`) from the Hugging Face hub."""

    name = "hub"

    def __init__(self, dataset_id: str = "openai/gsm8k", split: str = "train"):
        self.dataset_id = dataset_id
        self.split = split
        self._problems: list[Problem] | None = None

    def problems(self) -> Sequence[Problem]:
        if self._problems is None:
            if not _hub_reachable():
                raise DatasetError(f"GSM8K hub dataset {self.dataset_id} is not reachable (no connection to huggingface.co)")
            try:
                from datasets import load_dataset

                ds = load_dataset(self.dataset_id, "main", split=self.split)
            except Exception as err:  # noqa: BLE001 - any hub/network failure means "not reachable"
                raise DatasetError(f"GSM8K hub dataset {self.dataset_id} is not reachable: {str(err).splitlines()[0]}") from None
            probs = []
            for row in ds:
                final = gsm8k_final_answer(row["answer"])
                if final is not None:
                    q = row["question"].strip()
                    probs.append(Problem(qid=question_id(q), question=q, answer=final, solution=row["answer"]))
            self._problems = probs
        return self._problems


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect, so an offline machine falls back in seconds, not after the hub client's retries."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Built-in generator: multi-step word problems with exact integer answers.
# Each template draws its numbers from a seeded RNG and computes the answer in Python,
# so answers are exact by construction.

_NAMES = ["Ava", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam",
          "Maya", "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yara", "Zoe"]
_ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "beads", "stamps"]


def _t_shopping(r: random.Random) -> tuple[str, int]:
    n, item = r.choice(_NAMES), r.choice(_ITEMS)
    a, p, b, q = r.randint(2, 12), r.randint(2, 9), r.randint(2, 8), r.randint(3, 15)
    budget = a * p + b * q + r.randint(1, 60)
    return (f"{n} has ${budget}. {n} buys {a} {item} at ${p} each and {b} notebooks at ${q} each. "
            f"How many dollars does {n} have left?", budget - a * p - b * q)


def _t_share(r: random.Random) -> tuple[str, int]:
    n, item = r.choice(_NAMES), r.choice(_ITEMS)
    friends, each, extra = r.randint(2, 9), r.randint(3, 12), r.randint(1, 20)
    total = friends * each + extra
    return (f"{n} had {total} {item}. {n} kept {extra} and shared the rest equally among {friends} friends. "
            f"How many {item} did each friend get?", each)


def _t_rate(r: random.Random) -> tuple[str, int]:
    n = r.choice(_NAMES)
    rate, hours, days, bonus = r.randint(8, 30), r.randint(2, 8), r.randint(2, 6), r.randint(5, 50)
    return (f"{n} earns ${rate} per hour and works {hours} hours a day for {days} days. "
            f"{n} also gets a ${bonus} bonus. How much money does {n} earn in total?", rate * hours * days + bonus)


def _t_ages(r: random.Random) -> tuple[str, int]:
    a, b = r.sample(_NAMES, 2)
    age_b, k, years = r.randint(3, 15), r.randint(2, 4), r.randint(2, 12)
    return (f"{a} is {k} times as old as {b}. {b} is {age_b} years old. "
            f"How old will {a} be in {years} years?", k * age_b + years)


def _t_garden(r: random.Random) -> tuple[str, int]:
    rows, per_row, eaten, extra_rows = r.randint(3, 12), r.randint(4, 15), r.randint(1, 10), r.randint(1, 5)
    total = (rows + extra_rows) * per_row - eaten
    return (f"A garden has {rows} rows of {per_row} carrots. The gardener plants {extra_rows} more rows of the same size, "
            f"then rabbits eat {eaten} carrots. How many carrots are left?", total)


def _t_percent(r: random.Random) -> tuple[str, int]:
    n = r.choice(_NAMES)
    price = r.randint(2, 40) * 10
    pct = r.choice([10, 20, 25, 50])
    qty = r.randint(2, 5)
    return (f"A jacket costs ${price}. During a sale it is {pct}% off. {n} buys {qty} jackets on sale. "
            f"How much does {n} pay?", qty * price * (100 - pct) // 100)


def _t_bus(r: random.Random) -> tuple[str, int]:
    start, off1, on1, off2, on2 = r.randint(20, 60), r.randint(1, 15), r.randint(1, 20), r.randint(1, 15), r.randint(0, 10)
    return (f"A bus starts with {start} passengers. At the first stop {off1} get off and {on1} get on. "
            f"At the second stop {off2} get off and {on2} get on. How many passengers are on the bus now?",
            start - off1 + on1 - off2 + on2)


def _t_savings(r: random.Random) -> tuple[str, int]:
    n = r.choice(_NAMES)
    weekly, weeks, cost = r.randint(5, 25), r.randint(3, 12), r.randint(20, 100)
    return (f"{n} saves ${weekly} every week for {weeks} weeks, then spends ${cost} on a bike. "
            f"How much money does {n} have left?", weekly * weeks - cost)


def _t_boxes(r: random.Random) -> tuple[str, int]:
    item = r.choice(_ITEMS)
    boxes, per_box, broken, packs = r.randint(3, 10), r.randint(6, 24), r.randint(1, 5), r.randint(2, 4)
    good = boxes * per_box - broken
    return (f"A store receives {boxes} boxes with {per_box} {item} each. {broken} {item} are damaged and thrown away. "
            f"The rest are put into packs of {packs}, with any leftovers kept aside. How many full packs are made?",
            good // packs)


def _t_distance(r: random.Random) -> tuple[str, int]:
    n = r.choice(_NAMES)
    speed, h1, h2, back = r.randint(30, 70), r.randint(1, 4), r.randint(1, 3), r.randint(10, 40)
    return (f"{n} drives at {speed} miles per hour for {h1} hours, rests, then drives {h2} more hours at the same speed. "
            f"{n} then drives {back} miles back. How far is {n} from the start?", speed * (h1 + h2) - back)


def _t_classroom(r: random.Random) -> tuple[str, int]:
    classes, students, absent, groups = r.randint(2, 6), r.randint(18, 32), r.randint(1, 9), r.randint(2, 6)
    present = classes * students - absent
    return (f"A school has {classes} classes of {students} students. On Monday {absent} students are absent. "
            f"The students present are split into groups of {groups}. How many students are left without a full group?",
            present % groups)


def _t_recipe(r: random.Random) -> tuple[str, int]:
    cups, batches, extra, used = r.randint(2, 6), r.randint(2, 8), r.randint(3, 15), r.randint(1, 5)
    bag = cups * batches + extra + used
    return (f"A baker has {bag} cups of flour. Each batch of bread needs {cups} cups. The baker uses {used} cups "
            f"for a cake and then bakes {batches} batches of bread. How many cups of flour are left?", extra)


TEMPLATES: tuple[Callable[[random.Random], tuple[str, int]], ...] = (
    _t_shopping, _t_share, _t_rate, _t_ages, _t_garden, _t_percent, _t_bus, _t_savings, _t_boxes,
    _t_distance, _t_classroom, _t_recipe,
)


class GeneratedSource:
    """Seeded built-in problems. `templates` selects a subset (e.g. held-out templates for eval)."""

    name = "generated"

    def __init__(self, seed: int = 0, size: int = 5000, templates: Sequence[int] | None = None):
        self.seed = seed
        self.size = size
        self.templates = list(templates) if templates is not None else list(range(len(TEMPLATES)))
        if not self.templates or any(not 0 <= t < len(TEMPLATES) for t in self.templates):
            raise DatasetError(f"templates must be indices in 0..{len(TEMPLATES) - 1}")
        self._problems: list[Problem] | None = None

    def problems(self) -> Sequence[Problem]:
        if self._problems is None:
            r = random.Random(self.seed)
            out, seen = [], set()
            attempts = 0
            while len(out) < self.size and attempts < self.size * 20:
                attempts += 1
                t = TEMPLATES[self.templates[r.randrange(len(self.templates))]]
                question, answer = t(r)
                qid = question_id(question)
                if qid in seen:
                    continue
                seen.add(qid)
                out.append(Problem(qid=qid, question=question, answer=str(answer), solution=f"#### {answer}"))
            self._problems = out
        return self._problems


def open_source(kind: str = "auto", path: Path | str | None = None, seed: int = 0) -> DatasetSource:
    """Pick the dataset source. `auto`: JSONL when a path is given, else hub, else generator."""
    if kind not in ("auto", "hub", "jsonl", "generated"):
        raise DatasetError(f"dataset must be auto, hub, jsonl or generated, not {kind!r}")
    if kind == "jsonl" or (kind == "auto" and path):
        if not path:
            raise DatasetError("dataset=jsonl needs --dataset-path FILE.jsonl")
        src: DatasetSource = JsonlSource(path)
        src.problems()
    elif kind == "generated":
        src = GeneratedSource(seed=seed)
    else:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        if offline and kind == "auto":
            log.info("HF_HUB_OFFLINE is set: skipping the hub")
            src = GeneratedSource(seed=seed)
        else:
            try:
                src = HubSource()
                src.problems()
            except DatasetError as err:
                if kind == "hub":
                    raise
                log.info("%s; using the built-in problem generator", err)
                src = GeneratedSource(seed=seed)
    log.info("Dataset source: %s (%d problems)", describe(src), len(src.problems()))
    return src


def describe(src: DatasetSource) -> str:
    if isinstance(src, JsonlSource):
        return f"local JSONL {src.path}"
    if isinstance(src, HubSource):
        return f"hub {src.dataset_id}"
    if isinstance(src, GeneratedSource):
        return f"built-in generator (seed {src.seed}, {len(src.templates)} templates)"
    return src.name


def round_problems(src: DatasetSource, swarm_seed: int, round_no: int, n: int,
                   exclude: frozenset[str] = frozenset()) -> list[Problem]:
    """The round's question set: a pure function of (source, swarm seed, round)."""
    problems = [p for p in src.problems() if p.qid not in exclude]
    if not problems:
        raise DatasetError("no problems left after excluding the held-out set")
    digest = hashlib.sha256(f"{swarm_seed}:{round_no}".encode()).digest()
    r = random.Random(int.from_bytes(digest[:8], "big"))
    k = min(n, len(problems))
    return r.sample(problems, k)
