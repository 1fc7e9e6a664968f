"""Small pieces every stage shares: reuse counting, data versions and reject rows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

REJECT_COLUMNS = ("clip_id", "source", "reason", "message", "stage")


@dataclass
class Reuse:
    """How many items a step computed and how many it found already in the store."""

    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    rejected: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, float | int]:
        return {"computed": self.computed, "reused": self.reused, "rejected": self.rejected,
                "seconds": round(self.seconds, 3), **self.extra}


def data_version_of(keys: Iterable[str | None]) -> str:
    """A shard's data version: a hash of the sorted keys of what it holds.

    Unchanged inputs give the same keys and so the same version, which is what lets Dagster
    tell a re-run that changed nothing from one that did.
    """
    digest = hashlib.sha256()
    for key in sorted(k or "" for k in keys):
        digest.update(key.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:24]
