"""The trainer node's durable round state (what it has finished and published).

Saved atomically (write to a temp file, fsync, rename) next to the checkpoints, so a
killed node restarted with the same identity neither redoes nor republishes a stage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hivemind_exp.common.fileio import atomic_write_text


@dataclass
class NodeState:
    peer_id: str = ""
    last_done: tuple[int, int] | None = None  # (round, stage) finished AND published
    winners_done: list[int] = field(default_factory=list)  # rounds whose winners were picked and queued
    checkpoint: str | None = None  # directory name of the checkpoint matching last_done
    total_steps: int = 0
    # SAPO: the winners this node picked when it played a round, voted once the round is over
    round_winners: dict[int, list[str]] = field(default_factory=dict)
    task_levels: dict = field(default_factory=dict)  # SAPO curriculum state (the task source's state_dict)

    def done(self, round_no: int, stage: int) -> bool:
        return self.last_done is not None and tuple(self.last_done) >= (round_no, stage)

    @classmethod
    def load(cls, path: Path) -> "NodeState":
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RuntimeError(f"Node state {path} is unreadable ({err}); move it away to start this node afresh") from None
        last = raw.get("last_done")
        return cls(
            peer_id=raw.get("peer_id", ""),
            last_done=(int(last[0]), int(last[1])) if last else None,
            winners_done=[int(r) for r in raw.get("winners_done", [])][-50:],
            checkpoint=raw.get("checkpoint"),
            total_steps=int(raw.get("total_steps", 0)),
            round_winners={int(r): [str(p) for p in w] for r, w in dict(raw.get("round_winners") or {}).items()},
            task_levels=dict(raw.get("task_levels") or {}),
        )

    def save(self, path: Path) -> None:
        data = asdict(self)
        data["winners_done"] = self.winners_done[-50:]  # bounded: only recent rounds matter
        data["round_winners"] = {str(r): w for r, w in sorted(self.round_winners.items())[-8:]}
        atomic_write_text(path, json.dumps(data, indent=2))
