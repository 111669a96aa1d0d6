"""Atomic file replacement: write a new, uniquely named file beside the target, then rename it onto the target.

A reader never sees half a file, a crash mid-write keeps the previous one, and the temporary name (``mkstemp``) is
never one a user's file may already have.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A new temporary file beside ``path`` to write in the ``with`` block; renamed onto ``path`` when the block ends
    without an error, deleted when it raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # ours: gone already when it was renamed
