"""Frame tensors are a cache: dropping them when `frames_retention` says they are done.

At the 480x720 target a clip's uint8 frames weigh 51 MB against 4.5-9 MB of VAE moments, and
nothing reads them again once the latents exist: a later run decides reuse of latents from
their keys. So, by default, a shard's frames are dropped once its dataset is published
(`until_published`), or as soon as its latents are written (`none`); `keep` keeps them.

What stays: the frames' small thumbnail (the contact sheet) and, for I2V, the first-frame PNG
(the shard's files and the CogVideo export are built from it). Frames another running step
holds (the same clip in another shard, see `cog_assets.store.leases`) are left for that run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cog_assets.core.choices import ArtifactKind, FramesRetention
from cog_assets.store.content_store import ContentStore
from cog_assets.store.leases import held


@dataclass(frozen=True)
class Dropped:
    frames: int = 0
    bytes: int = 0
    held: int = 0  # left in place: another running step holds them


def drop_frames(store: ContentStore, keys: Iterable[str | None], *, run_id: str | None = None
                ) -> Dropped:
    """Remove the frames of `keys` that no other run holds; `run_id`: the run dropping them
    (its own leases do not keep it from dropping what it is done with)."""
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return Dropped()
    others = held(store, excluding_run=run_id)
    frames = bytes_ = kept = 0
    for key in wanted:
        if others.holds_key(ArtifactKind.frames, key):
            kept += 1
            continue
        path = store.artifact_path(ArtifactKind.frames, key)
        try:
            size = store.fs.size(path)
            store.fs.rm(path)
        except FileNotFoundError:
            continue
        frames, bytes_ = frames + 1, bytes_ + size
    return Dropped(frames, bytes_, kept)


def drops_after_publication(retention: FramesRetention | str) -> bool:
    return FramesRetention(retention) != FramesRetention.keep


def drops_after_latents(retention: FramesRetention | str) -> bool:
    return FramesRetention(retention) == FramesRetention.none


def latent_keys_making_frames_unneeded(retention: FramesRetention | str, vaes: Sequence
                                       ) -> Callable[[str], list[str]] | None:
    """For extract_frames (the frame_tensors step and decoding ahead): a frames key's latent
    keys under each VAE identity in `vaes` (a clip with one of them needs no frames), or None
    where frames are kept (then they are decoded or read as always)."""
    if not drops_after_publication(retention):
        return None
    return lambda key: [vae.key(key) for vae in vaes]
