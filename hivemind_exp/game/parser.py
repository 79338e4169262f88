"""Parse a completion's tagged sections once, into a `Parsed` that every reward reads.

`TagParser(("think", "answer")).parse(text)` finds `<think>...</think>` and
`<answer>...</answer>` and records, per tag, how many times it opened and closed and
which text it holds; it never raises on bad input:

- missing tag        -> value None
- duplicated tag     -> the LAST complete pair wins (a model revising its answer), flagged
- unclosed tag       -> the text up to the next known tag (or the end), flagged
- stray closing tag  -> counted, ignored
- nested / reordered -> values still read, `in_order` is False

Tags are matched case-insensitively and may carry spaces (`</ answer >`). One linear
regex scan finds every tag, so a 100k-character completion parses in milliseconds.
`Parsed.format_score` turns the flags into one number in [0, 1] (partial credit).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Stage -> the tagged sections its completion must contain, in order.
STAGE_FIELDS: Mapping[int, tuple[str, ...]] = {
    1: ("think", "answer"),
    2: ("compare", "identify"),
    3: ("summarize_feedback", "majority", "think", "answer"),
}
# Non-whitespace characters allowed outside the tags before format credit shrinks
# (a stray "Sure!" is fine; a paragraph of untagged text is not).
OUTSIDE_ALLOWANCE = 20


@dataclass(frozen=True)
class TagInfo:
    """What the parser saw of one tag."""

    name: str
    opened: int = 0  # opening tags seen
    closed: int = 0  # closing tags seen
    complete: bool = False  # the chosen value had a closing tag
    value: str | None = None  # stripped text of the chosen occurrence; None when never opened
    span: tuple[int, int] | None = None  # chosen occurrence: (start of `<tag>`, end of `</tag>` or of text)

    @property
    def present(self) -> bool:
        return self.value is not None

    @property
    def well_formed(self) -> bool:
        """Exactly one `<tag>...</tag>` pair with non-empty content."""
        return self.opened == 1 and self.closed == 1 and self.complete and bool(self.value)


@dataclass(frozen=True)
class Parsed:
    """A parsed completion: tag values plus format-compliance facts."""

    text: str
    fields: tuple[str, ...]
    tags: Mapping[str, TagInfo]
    in_order: bool  # present tags do not overlap and appear in `fields` order
    outside_chars: int  # non-whitespace characters outside the chosen tags
    format_score: float = field(default=0.0)

    def get(self, name: str) -> str | None:
        """The tag's text (stripped), or None when it never opened."""
        info = self.tags.get(name)
        return None if info is None else info.value

    def __getitem__(self, name: str) -> str | None:
        if name not in self.tags:
            raise KeyError(f"{name!r} is not one of this parser's tags {self.fields}")
        return self.tags[name].value

    def well_formed(self, name: str) -> bool:
        info = self.tags.get(name)
        return info is not None and info.well_formed


def completion_text(completion: Any) -> str:
    """Plain text of a completion: a string, or a chat list `[{"role": ..., "content": ...}]`."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence):
        return "\n".join(completion_text(m) for m in completion)
    raise TypeError(f"completion must be a string or a list of chat messages, got {type(completion).__name__}")


def _nonspace(text: str) -> int:
    return len("".join(text.split()))


class TagParser:
    """Parser for one fixed, ordered set of tags (like verifiers' XMLParser)."""

    def __init__(self, fields: Sequence[str]):
        names = tuple(fields)
        if not names:
            raise ValueError("TagParser needs at least one tag name")
        for name in names:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"tag name {name!r} must be lower-case letters, digits or '_'")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate tag names in {names}")
        self.fields = names
        alternatives = "|".join(sorted(names, key=len, reverse=True))
        # No space between '<' and '/' and no nested quantifiers: one linear pass.
        self._tag = re.compile(rf"<(/?)\s*({alternatives})\s*>", re.IGNORECASE)

    def __repr__(self) -> str:
        return f"TagParser({self.fields!r})"

    def parse(self, completion: Any) -> Parsed:
        text = completion_text(completion)
        tokens = [(m.start(), m.end(), m.group(1) == "/", m.group(2).lower()) for m in self._tag.finditer(text)]
        tags = {name: self._read_tag(name, tokens, text) for name in self.fields}
        spans = sorted(t.span for t in tags.values() if t.span is not None)
        ordered = [tags[n].span for n in self.fields if tags[n].span is not None]
        in_order = bool(ordered) and all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:]))
        inside = 0
        end = 0
        for start, stop in spans:  # merge overlaps so nested tags are not counted twice
            start = max(start, end)
            if stop > start:
                inside += _nonspace(text[start:stop])
                end = stop
        outside = _nonspace(text) - inside
        return Parsed(
            text=text,
            fields=self.fields,
            tags=tags,
            in_order=in_order,
            outside_chars=outside,
            format_score=_format_score(tags, in_order, outside),
        )

    @staticmethod
    def _read_tag(name: str, tokens: list[tuple[int, int, bool, str]], text: str) -> TagInfo:
        opened = closed = 0
        open_at: tuple[int, int] | None = None
        best: tuple[int, int, int, int] | None = None  # (tag start, content start, content end, tag end)
        for start, stop, is_close, tag in tokens:
            if tag != name:
                continue
            if is_close:
                closed += 1
                if open_at is not None:
                    best = (open_at[0], open_at[1], start, stop)
                    open_at = None
            else:
                opened += 1
                open_at = (start, stop)  # a second opening restarts the section
        complete = True
        if best is None and open_at is not None:
            # Unclosed and never closed before: read until the next tag of another section.
            stop_at = len(text)
            for start, _stop, _is_close, tag in tokens:
                if start >= open_at[1] and tag != name:
                    stop_at = start
                    break
            best = (open_at[0], open_at[1], stop_at, stop_at)
            complete = False
        if best is None:
            return TagInfo(name=name, opened=opened, closed=closed)
        return TagInfo(
            name=name,
            opened=opened,
            closed=closed,
            complete=complete,
            value=text[best[1] : best[2]].strip(),
            span=(best[0], best[3]),
        )


def _format_score(tags: Mapping[str, TagInfo], in_order: bool, outside: int) -> float:
    """Partial credit in [0, 1].

    70%: the tags, each 1 for a clean non-empty pair, 0.5 when present but duplicated or
    unclosed, 0.25 when present but empty. 30%: order and little untagged text, scaled by
    the share of tags present so one lone tag cannot collect it all.
    """
    per_tag = [
        1.0 if t.well_formed else 0.5 if t.value else 0.25 if t.present else 0.0 for t in tags.values()
    ]
    present = sum(t.present for t in tags.values()) / len(tags)
    if present == 0:
        return 0.0
    clean = 1.0 if outside <= OUTSIDE_ALLOWANCE else OUTSIDE_ALLOWANCE / outside
    return 0.7 * sum(per_tag) / len(per_tag) + 0.3 * present * (0.5 * float(in_order) + 0.5 * clean)


@functools.cache
def stage_parser(stage: int) -> TagParser:
    """The parser of stage 1 (answer), 2 (critique) or 3 (decide); built once per stage."""
    if stage not in STAGE_FIELDS:
        raise ValueError(f"stage must be one of {sorted(STAGE_FIELDS)}, got {stage!r}")
    return TagParser(STAGE_FIELDS[stage])
