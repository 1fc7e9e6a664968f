"""Small JSON files that are replaced whole: a reader sees the old content or the new, never
half of one (the compile-cost ledger, the caption token counts, the backfill's summary)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def read_json(path: str | os.PathLike) -> Any:
    """The file's value, or None where it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: str | os.PathLike, value: Any, **dump_options: Any) -> None:
    """`value` as JSON at `path`: written to a temporary file beside it, flushed to disk and
    renamed over it; the temporary file is removed if anything fails (a kill -9 between the
    two leaves a `<name>.*.tmp` that the next write does not read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False,
                                         prefix=path.name + ".", suffix=".tmp")
    try:
        with handle:
            json.dump(value, handle, **dump_options)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
        raise
