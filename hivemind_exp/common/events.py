"""Structured events: one JSON object per line, what tests and benchmarks read instead of logs.

A node writes one ``step`` event per GRPO step (round, game, groups and where they came
from, rewards, tokens, seconds) to ``<data_dir>/events.jsonl``. Lines are appended and
flushed whole, so a reader tailing the file sees complete lines only; a node restarted on
the same data dir appends to the same file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

EVENTS_FILE = "events.jsonl"


class EventSink(Protocol):
    def emit(self, kind: str, **fields: Any) -> dict[str, Any]: ...


class JsonlEvents:
    """Appends events to a JSON-lines file (thread-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"kind": kind, "at": round(time.time(), 3), **fields}
        line = json.dumps(event, separators=(",", ":"), allow_nan=False)
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
        return event


class MemoryEvents:
    """Keeps events in a list (unit tests, in-process benchmarks)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"kind": kind, "at": round(time.time(), 3), **fields}
        json.dumps(event, allow_nan=False)  # same contract as the file sink: JSON-serialisable, finite
        self.events.append(event)
        return event


def read_events(path: str | Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    """Events of a file in order (a torn last line, from a crash mid-write, is skipped)."""
    p = Path(path)
    if not p.is_file():
        return
    with p.open(encoding="utf-8") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if kind is None or event.get("kind") == kind:
                yield event
