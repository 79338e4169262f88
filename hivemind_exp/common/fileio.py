"""One way to write a small file so that no reader ever sees half of it.

`atomic_write_text(path, text, mode)`: a temp file in the same folder, created with `mode`
before any byte is written (so a secret is never readable by others, even for an instant),
flushed and fsynced, then renamed over `path`. Node state, the coordinator's state and
bootnode files, deployment files, the user's login files and generated keys all use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
