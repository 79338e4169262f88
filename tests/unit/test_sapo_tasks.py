"""ReasoningGym source: the default mix, specs, draws vs held-out, mix errors, offline, curriculum."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from hivemind_exp.trainer.profiles import CONFIG_ROOT, DEFAULT_TASK_MIX
from hivemind_exp.sapo.tasks import (
    HELD_OUT_BASE,
    INDEX_LIMIT,
    SEED_LIMIT,
    ReasoningGymSource,
    SpecError,
    TaskMix,
    TaskMixError,
    TaskSpec,
    config_hash,
)

DEFAULT_MIX = CONFIG_ROOT / DEFAULT_TASK_MIX
REPO = Path(__file__).resolve().parents[2]

LEVELLED = {
    "tasks": [
        {"name": "chain_sum", "weight": 2, "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
         "levels": [{}, {"min_terms": 3, "max_terms": 3}, {"min_digits": 2, "max_digits": 2}]},
        {"name": "gcd", "weight": 1, "config": {"max_value": 50}},
    ],
    "curriculum": {"up": 0.7, "down": 0.2, "window": 3},
}


@pytest.fixture(scope="module")
def mix() -> TaskMix:
    return TaskMix.from_yaml(DEFAULT_MIX)


@pytest.fixture(scope="module")
def source(mix: TaskMix) -> ReasoningGymSource:
    return ReasoningGymSource(mix)


def _wrong(answer: str) -> str:
    """A wrong answer that does not contain the right one (score_answer gives partial credit for that)."""
    return str(int(answer) + 1) if answer.lstrip("-").isdigit() else "zzz"


# -- the default mix ------------------------------------------------------------------


def test_default_mix_parses_and_every_task_scores_its_own_answer(mix: TaskMix, source: ReasoningGymSource):
    assert mix.tasks and all(e.weight > 0 for e in mix.tasks)
    for entry in mix.tasks:
        for level in range(entry.n_levels):
            problems = source.held_out(6, levels={entry.name: level})
            mine = [p for p in problems if p.spec.task == entry.name]
            assert mine, entry.name
            for p in mine:
                assert p.level == level
                assert source.score(p, p.answer) == 1.0, (entry.name, level, p.question, p.answer)
                assert source.score(p, _wrong(p.answer)) < 1.0, (entry.name, p.answer)
                assert source.score(p, "") == 0.0 and source.score(p, None) == 0.0


def test_default_mix_has_no_answer_a_constant_guess_wins(source: ReasoningGymSource):
    """Always answering the most common answer (e.g. "Yes", "1") must not pass as skill."""
    by_task: dict[str, Counter[str]] = {}
    for p in source.held_out(128):
        by_task.setdefault(p.spec.task, Counter())[p.answer.strip().lower()] += 1
    for task, counts in by_task.items():
        top, n = counts.most_common(1)[0]
        assert n / sum(counts.values()) <= 0.5, f"{task}: answer {top!r} is {n}/{sum(counts.values())} of held-out"


def test_held_out_shares_follow_the_weights(mix: TaskMix, source: ReasoningGymSource):
    problems = source.held_out(100)
    assert len(problems) == 100
    counts = Counter(p.spec.task for p in problems)
    total = sum(e.weight for e in mix.tasks)
    for entry in mix.tasks:
        assert abs(counts[entry.name] - 100 * entry.weight / total) <= 1
    assert source.held_out(100) == problems  # deterministic
    assert all(source.is_held_out_seed(p.spec.seed) for p in problems)


# -- specs ----------------------------------------------------------------------------


def test_spec_regenerates_identical_question_and_answer(mix: TaskMix, source: ReasoningGymSource):
    other_peer = ReasoningGymSource(TaskMix.from_yaml(DEFAULT_MIX))  # built separately, same mix
    drawn = source.draw(node_seed=11, round_no=3, n=24)
    for p in drawn:
        wire = json.loads(json.dumps(p.spec.to_dict()))
        again = other_peer.regenerate(TaskSpec.from_dict(wire))
        assert (again.spec, again.question, again.answer) == (p.spec, p.question, p.answer)
        assert len(p.spec.config_hash) == 16 and int(p.spec.config_hash, 16) >= 0
    held = source.held_out(4)[0]
    assert other_peer.regenerate(held.spec, allow_held_out=True).question == held.question


def test_bad_specs_raise_spec_error(source: ReasoningGymSource):
    good = source.draw(node_seed=1, round_no=0, n=1)[0].spec

    def variant(**kw: object) -> TaskSpec:
        return TaskSpec(**{**good.to_dict(), **kw})  # type: ignore[arg-type]

    cases = {
        "config hash": variant(config_hash="0" * 16),
        "not in this node's mix": variant(task="letter_jumble"),
        "seed": variant(seed=SEED_LIMIT),
        "seed ": variant(seed=-1),
        "index": variant(index=INDEX_LIMIT),
        "reaches the held-out range": variant(seed=HELD_OUT_BASE - 5, index=10),
        "held-out seed": variant(seed=HELD_OUT_BASE + 3),
    }
    for words, spec in cases.items():
        with pytest.raises(SpecError, match=words.strip()):
            source.regenerate(spec)
    with pytest.raises(SpecError, match="seed"):
        TaskSpec.from_dict({"task": "chain_sum", "config_hash": good.config_hash, "seed": "7", "index": 0})
    with pytest.raises(SpecError, match="index"):
        TaskSpec.from_dict({"task": "chain_sum", "config_hash": good.config_hash, "seed": 7})


# -- draws ----------------------------------------------------------------------------


def test_draw_is_deterministic_and_differs_across_nodes_and_rounds(source: ReasoningGymSource):
    a = source.draw(node_seed=5, round_no=2, n=16)
    assert [p.spec for p in a] == [p.spec for p in source.draw(node_seed=5, round_no=2, n=16)]
    assert len(a) == 16 and source.draw(node_seed=5, round_no=2, n=0) == []
    b = source.draw(node_seed=6, round_no=2, n=16)
    c = source.draw(node_seed=5, round_no=3, n=16)
    assert {p.spec for p in a}.isdisjoint({p.spec for p in b})
    assert {p.spec for p in a}.isdisjoint({p.spec for p in c})
    assert [p.question for p in a] != [p.question for p in b]
    assert all(not source.is_held_out_seed(p.spec.seed) for p in a + b + c)


def test_draws_never_overlap_held_out_by_spec_key_or_text(mix: TaskMix, source: ReasoningGymSource):
    held = source.held_out(mix.held_out_reserve)
    held_text = {p.question for p in held}
    held_keys = {(p.spec.task, p.spec.seed + p.spec.index) for p in held}  # reasoning-gym seeds item i with seed + i
    drawn = [p for node in range(4) for rnd in range(30) for p in source.draw(node_seed=node, round_no=rnd, n=8)]
    tasks = Counter(p.spec.task for p in drawn)
    assert set(tasks) == {e.name for e in mix.tasks}  # every task is drawn, by weight
    assert held_text.isdisjoint(p.question for p in drawn)
    assert held_keys.isdisjoint((p.spec.task, p.spec.seed + p.spec.index) for p in drawn)
    assert all(p.spec.seed + p.spec.index < HELD_OUT_BASE for p in drawn)


def test_draw_and_regenerate_take_milliseconds(source: ReasoningGymSource):
    started = time.perf_counter()
    for rnd in range(100, 110):
        for p in source.draw(node_seed=77, round_no=rnd, n=32):
            source.regenerate(p.spec)
    per_round = (time.perf_counter() - started) / 10
    assert per_round < 0.25, f"draw + regenerate of 32 items took {per_round * 1000:.0f} ms"


# -- bad mixes ------------------------------------------------------------------------


def _mix(*tasks: dict, **extra: object) -> TaskMix:
    return TaskMix.from_mapping({"tasks": list(tasks), **extra})


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"name": "chain_sums", "weight": 1}, r"unknown reasoning-gym task 'chain_sums'.*did you mean chain_sum"),
        ({"name": "chain_sum", "weight": 1, "config": {"max_term": 3}}, r"task chain_sum: config key 'max_term'.*max_terms"),
        ({"name": "chain_sum", "weight": 1, "config": {"seed": 3}}, r"task chain_sum: config key 'seed' is set by the source"),
        ({"name": "chain_sum", "weight": 1, "config": {"min_terms": 5, "max_terms": 2}}, r"task chain_sum: reasoning-gym cannot generate"),
        ({"name": "chain_sum", "weight": 1, "levels": [{}, {"max_digit": 2}]}, r"task chain_sum level 1: config key 'max_digit'"),
        ({"name": "propositional_logic", "weight": 1}, r"task propositional_logic: its items carry no stored answer"),
    ],
)
def test_bad_mix_entries_name_the_task_and_the_fix(entry: dict, words: str):
    with pytest.raises(TaskMixError, match=words):
        ReasoningGymSource(_mix(entry))


def test_a_task_whose_own_answer_does_not_score_one_is_refused(monkeypatch: pytest.MonkeyPatch):
    from reasoning_gym.factory import DATASETS

    gcd_cls, _ = DATASETS["gcd"]
    monkeypatch.setattr(gcd_cls, "score_answer", lambda self, answer, entry: 0.0)
    with pytest.raises(TaskMixError, match=r"task gcd: score_answer gives the generator's own answer .* 0.0 instead of 1.0"):
        ReasoningGymSource(_mix({"name": "gcd", "weight": 1}))


def test_mix_schema_errors_name_the_task(tmp_path: Path):
    with pytest.raises(TaskMixError, match=r"tasks\.1\.weight \(task gcd\)"):
        _mix({"name": "chain_sum", "weight": 1}, {"name": "gcd", "weight": 0})
    with pytest.raises(TaskMixError, match="listed twice"):
        _mix({"name": "gcd", "weight": 1}, {"name": "gcd", "weight": 2})
    with pytest.raises(TaskMixError, match="tasks"):
        _mix()
    with pytest.raises(TaskMixError, match="typo"):
        _mix({"name": "gcd", "weight": 1}, typo=3)
    with pytest.raises(TaskMixError, match="curriculum"):
        _mix({"name": "gcd", "weight": 1}, curriculum={"up": 0.1, "down": 0.5})
    with pytest.raises(TaskMixError, match="does not exist"):
        TaskMix.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [unclosed\n")
    with pytest.raises(TaskMixError, match="not valid YAML"):
        TaskMix.from_yaml(bad)
    bad.write_text("- {name: gcd, weight: 1}\n")  # a bare list of tasks is accepted
    assert TaskMix.from_yaml(bad).tasks[0].name == "gcd"


def test_a_task_space_smaller_than_the_held_out_reserve_is_refused():
    tiny = {"name": "count_bits", "weight": 1, "config": {"min_n": 1, "max_n": 20}}
    with pytest.raises(TaskMixError, match=r"task count_bits level 0: .* too few distinct questions"):
        ReasoningGymSource(_mix(tiny, held_out_reserve=64))
    assert ReasoningGymSource(_mix(tiny, held_out_reserve=4)).draw(0, 0, 4)


# -- offline --------------------------------------------------------------------------

_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    from hivemind_exp.sapo.tasks import ReasoningGymSource, TaskMix

    source = ReasoningGymSource(TaskMix.from_yaml(sys.argv[1]))
    out = {}
    for entry in source.mix.tasks:
        for level in range(entry.n_levels):
            problems = [p for p in source.held_out(8, levels={entry.name: level}) if p.spec.task == entry.name]
            out[f"{entry.name}/{level}"] = sum(source.score(p, p.answer) == 1.0 for p in problems)
    out["drawn"] = len(source.draw(3, 1, 16))
    print(json.dumps(out))
    """
)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


def test_every_task_of_the_default_mix_generates_without_network(mix: TaskMix):
    cmd = [sys.executable, "-c", _OFFLINE_SCRIPT, str(DEFAULT_MIX)]
    if _unshare_works():
        cmd = ["unshare", "-rn", *cmd]  # no network namespace interfaces at all, on top of the patched socket
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {f"{e.name}/{lvl}" for e in mix.tasks for lvl in range(e.n_levels)}
    assert set(counts) - {"drawn"} == expected
    assert all(counts[k] >= 1 for k in expected), counts
    assert counts["drawn"] == 16


# -- curriculum -----------------------------------------------------------------------


def test_curriculum_moves_levels_by_recent_accuracy():
    source = ReasoningGymSource(TaskMix.from_mapping(LEVELLED), curriculum=True)
    assert source.level("chain_sum") == 0
    level0_hash = config_hash("chain_sum", source.mix.entry("chain_sum").effective_config(0))
    assert [source.observe("chain_sum", 0.9) for _ in range(3)] == [0, 0, 1]  # a full window above `up`
    assert [source.observe("chain_sum", 0.5) for _ in range(3)] == [1, 1, 1]  # in between: stays
    # The window slides: [0.5, 0.5, 1.0] averages 0.67 (stays), [0.5, 1.0, 1.0] 0.83 (rises).
    assert [source.observe("chain_sum", 1.0) for _ in range(3)] == [1, 2, 2]
    assert [source.observe("chain_sum", 1.0) for _ in range(3)] == [2, 2, 2]  # the top level is the top
    assert [source.observe("chain_sum", 0.0) for _ in range(3)] == [2, 2, 1]  # below `down`: falls
    assert [source.observe("gcd", 1.0) for _ in range(3)] == [0, 0, 0]  # one level only
    drawn = [p for p in source.draw(2, 5, 32) if p.spec.task == "chain_sum"]
    assert drawn and all(p.level == 1 for p in drawn)
    assert all(p.spec.config_hash != level0_hash for p in drawn)
    # A receiver still at level 0 regenerates a level-1 spec: every level's hash is known.
    receiver = ReasoningGymSource(TaskMix.from_mapping(LEVELLED), curriculum=True)
    for p in drawn:
        assert receiver.regenerate(p.spec).question == p.question
    assert all(p.question.count("+") + p.question.count("-") == 2 for p in drawn)  # three terms
    with pytest.raises(ValueError, match="accuracy"):
        source.observe("chain_sum", 1.5)
    with pytest.raises(KeyError, match="not in the mix"):
        source.observe("letter_jumble", 0.5)


def test_curriculum_off_keeps_levels():
    source = ReasoningGymSource(TaskMix.from_mapping(LEVELLED), curriculum=False)
    assert [source.observe("chain_sum", 1.0) for _ in range(6)] == [0] * 6


def test_curriculum_state_round_trips():
    source = ReasoningGymSource(TaskMix.from_mapping(LEVELLED), curriculum=True)
    for acc in (0.9, 0.9, 0.9, 0.8, 0.75):
        source.observe("chain_sum", acc)
    state = json.loads(json.dumps(source.state_dict()))  # the node checkpoints it as JSON
    resumed = ReasoningGymSource(TaskMix.from_mapping(LEVELLED), curriculum=True)
    resumed.load_state_dict(state)
    assert resumed.levels() == source.levels() == {"chain_sum": 1, "gcd": 0}
    assert resumed.state_dict() == source.state_dict()
    assert [p.spec for p in resumed.draw(4, 4, 12)] == [p.spec for p in source.draw(4, 4, 12)]
    assert resumed.observe("chain_sum", 0.9) == source.observe("chain_sum", 0.9) == 2  # the window carried over
    with pytest.raises(ValueError, match="letter_jumble"):
        resumed.load_state_dict({"version": 1, "levels": {"letter_jumble": 0}})
    with pytest.raises(ValueError, match="level 7 of task chain_sum"):
        resumed.load_state_dict({"version": 1, "levels": {"chain_sum": 7}})
    with pytest.raises(ValueError, match="version"):
        resumed.load_state_dict({"levels": {}})
