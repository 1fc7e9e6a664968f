"""Small pieces every stage shares: reuse counting and the columns of a reject row."""

from __future__ import annotations

from dataclasses import dataclass, field

from cog_assets.core.reasons import RejectReason
from cog_assets.media.errors import MediaError
from cog_assets.runtime.worker_pool import TaskTimeout, WorkerCrash, describe_exit
from cog_assets.store.content_store import ContentStore


@dataclass
class Reuse:
    """How many items a step computed and how many it found already in the store."""

    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    rejected: int = 0
    extra: dict[str, float | str] = field(default_factory=dict)
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


def worker_failure(exc: BaseException, name: str | None, *, doing: str, limit_s: float | None,
                   setting: str, timeout: RejectReason, crash: RejectReason, crashed: str
                   ) -> tuple[RejectReason, str]:
    """(reason, message) of an item whose worker failed in a way that rejects only that item
    (its media error, a timeout, a crash), the message led by `name`; anything else is a bug
    and is raised. `crashed`: what died, with `{exit}` for how."""
    lead = f"{name}: " if name else ""
    if isinstance(exc, MediaError):
        return exc.reason, f"{lead}{exc.message}"
    if isinstance(exc, TaskTimeout):
        return timeout, (f"{lead}{doing} took longer than the {limit_s:g} s limit ({setting}); "
                         "its worker was stopped")
    if isinstance(exc, WorkerCrash):
        return crash, f"{lead}{crashed.format(exit=describe_exit(exc.exitcode))}"
    raise exc
