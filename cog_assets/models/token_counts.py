"""Caption token counts remembered by tokenizer and caption, so a run whose captions were all
counted before loads no tokenizer.

Loading the tokenizer (transformers' import, then the tokenizer files) was 0.9-1.4 s of the
1.7 s validated_clips took in a one-clip change, for counts that were known: a count depends
only on the tokenizer (its identity, as in every artefact key) and the caption's text. The
counts live in one small JSON file per tokenizer beside the Dagster instance (as inductor's
cache does), mapping the caption's SHA-256 to its count. It is a cache: a missing, damaged or
concurrently overwritten file only means counting again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from cog_assets.runtime.json_file import read_json, write_json


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TokenCountCache:
    """The counts one tokenizer (`identity`) gave, in `directory`."""

    def __init__(self, directory: str | os.PathLike, identity: str):
        self.path = Path(directory) / f"{_digest(identity)[:16]}.json"
        self.identity = identity

    def read(self) -> dict[str, int]:
        raw = read_json(self.path)
        if not isinstance(raw, dict) or raw.get("tokenizer") != self.identity \
                or not isinstance(raw.get("counts"), dict):
            return {}
        return {k: v for k, v in raw["counts"].items()
                if isinstance(v, int) and not isinstance(v, bool) and v >= 0}

    def counts(self, captions: list[str], count: Callable[[list[str]], list[int]]
               ) -> list[int]:
        """Each caption's count: remembered ones as they are, the others by `count` (called
        once, with each new caption once, and only if there is one), then remembered."""
        known = self.read()
        digests = [_digest(caption) for caption in captions]
        new = {d: c for d, c in zip(digests, captions) if d not in known}
        if new:
            counted = count(list(new.values()))
            if len(counted) != len(new):
                raise ValueError(f"{len(counted)} token counts for {len(new)} captions")
            known.update(zip(new, counted))
            try:
                write_json(self.path, {"tokenizer": self.identity, "counts": known})
            except OSError:  # a read-only instance: counted, just not remembered
                pass
        return [known[d] for d in digests]
