"""Where a profile's weights come from and a short identity for them.

The identity goes into every artefact key, so changing weights, revision or dtype re-computes
exactly the artefacts they produced and nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cog_assets.core.profiles import ModelProfile
from cog_assets.models.tiny import TINY_IDENTITY


@dataclass(frozen=True)
class WeightsSource:
    """A profile plus where its weights live: a local diffusers-layout dir or a hub id."""

    profile: ModelProfile
    weights: str | None = None  # None: the profile's default hub id (or the seeded tiny models)
    revision: str | None = None

    @property
    def location(self) -> str | None:
        return self.weights or self.profile.hub_id

    def is_tiny(self) -> bool:
        return self.profile.name.startswith("tiny") and self.weights is None

    def identity(self, component: str) -> str:
        """Name + revision, or a fingerprint of a local directory's files for `component`."""
        if self.is_tiny():
            return f"{TINY_IDENTITY}/{component}"
        location = self.location
        if location is None:
            raise ValueError(f"profile {self.profile.name} has no weights: set a directory or hub id")
        local = Path(location) / component
        if local.is_dir():
            return f"dir:{directory_fingerprint(local)}/{component}"
        return f"hub:{location}@{self.revision or 'main'}/{component}"


def directory_fingerprint(directory: Path) -> str:
    """Names, sizes and the head and tail of every file: cheap, and changes with the weights."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(directory).as_posix()}:{size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return digest.hexdigest()[:16]
