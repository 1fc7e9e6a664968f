"""Small pieces every stage shares: reuse counting and the columns of a reject row."""

from __future__ import annotations

from dataclasses import dataclass, field

from cog_assets.store import ContentStore

REJECT_COLUMNS = ("clip_id", "source", "reason", "message", "stage")


@dataclass
class Reuse:
    """How many items a step computed and how many it found already in the store."""

    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    rejected: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    corrupt: list[str] = field(default_factory=list)  # damaged artefacts replaced, described

    def as_metadata(self) -> dict[str, float | int | str]:
        metadata: dict[str, float | int | str] = {
            "computed": self.computed, "reused": self.reused, "rejected": self.rejected,
            "seconds": round(self.seconds, 3), **self.extra}
        if self.corrupt:
            metadata["corrupt_replaced"] = len(self.corrupt)
            metadata["corrupt_artifacts"] = "\n".join(self.corrupt)
        return metadata


def reusable(store: ContentStore, kind: str, key: str, stats: Reuse,
             full: bool | None = None) -> bool:
    """Whether the artefact under `key` can be reused as it is. A damaged one is quarantined
    and noted in `stats` (key, path, what is wrong), so the caller computes it again; `full`
    as ContentStore.check_artifact (default: the store's verify_reuse)."""
    check = store.check_artifact(kind, key, full=full)
    if check.ok:
        return True
    if not check.missing:
        moved = store.quarantine(kind, key)
        stats.corrupt.append(f"{check.describe()}; moved to {moved}, computed again")
    return False
