"""Small pieces every stage shares: reuse counting and the columns of a reject row."""

from __future__ import annotations

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
