"""Decode the next shard's frames while the current shard's models run.

A multi-shard backfill runs its shards one after the other in one process. Each shard's run
decodes its clips (CPU) and then encodes them (the VAE: GPU, or the CPU's vector units), so
on its own the decoder idles while the VAE works and the other way round. While shard k
runs, this decodes shard k+1's frames into the content-addressed store in a helper process
(through the usual decode pool); when shard k+1's run reaches frame_tensors, its frames are
there and are reused, so a first run's wall time approaches the encoders' time alone. Frames
are stored under the same keys the run would use, so nothing is decoded twice and nothing
differs; like frame_tensors, it decodes no frames for a clip whose latents are in the store
when frames are a cache (frames_retention). Knows nothing of Dagster.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor

from cog_assets.core.config import Settings
from cog_assets.core.profiles import get_profile
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.models.runtime import ModelRuntime
from cog_assets.runtime.libc import libc_function
from cog_assets.sources.uploads import UploadState
from cog_assets.stages.common import Reuse
from cog_assets.stages.frames import extract_frames, note_decoded_ahead
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.scene_segments import split_segments
from cog_assets.stages.validation import validate_clips
from cog_assets.store.content_store import ContentStore
from cog_assets.store.retention import latent_keys_making_frames_unneeded

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl's option number (linux/prctl.h)
_PRCTL = libc_function("prctl", [ctypes.c_int, ctypes.c_ulong])


def die_with_parent(parent: int) -> None:
    """Run in the helper as it starts: killed when the backfill dies, kill -9 included (a pool
    worker otherwise waits for work forever, holding its memory, or decodes on for nobody).
    Linux; elsewhere the helper outlives a killed backfill. Also yield_to_the_run()."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
    yield_to_the_run()


def yield_to_the_run() -> None:
    """Give the helper (and the decode workers it starts, which inherit it) only the CPU time
    the run leaves idle: SCHED_IDLE on Linux, else the lowest nice value. On a CPU host the
    VAE keeps every core busy, and a decoder beside it at the same priority takes its share
    of the cores from the VAE; at idle priority it fills the VAE's pauses and what the other
    steps leave, and on a GPU host, where the run mostly waits for the device, it still gets
    the CPUs."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def decode_shard(settings: Settings, shard: str) -> Reuse:
    """The frames of every clip of `shard` that validation accepts, into the store (and its
    sources' scene scans, where scenes are split or scored); what it computed."""
    store = ContentStore(settings.store.url)
    sources = settings.sources
    policy = FramePolicy.build(get_profile(settings.model.profile), settings.frames)
    known = UploadState(store, sources, settings.model.profile).known_hashes()
    manifest = build_manifest(sources, shard, known=known)
    # The run's own steps in its order: scene segments (scanned here, reused by the run) give
    # the clips and their windows, so the frames decoded are the ones the run will ask for.
    segments, scanned, _ = split_segments(manifest, sources, settings.segments, settings.limits,
                                          store)
    # Captions are not written here (no model is asked from a helper): a clip the caption step
    # will caption is decoded by its run, and one it will reject is decoded for nothing.
    # Token counts do not decide acceptance (an over-long caption is flagged, not rejected).
    validated = validate_clips(segments, sources.data_root, policy, settings.limits)
    # Like frame_tensors: no frames for a clip whose latents are there, when frames are a cache.
    unneeded = latent_keys_making_frames_unneeded(
        settings.store.frames_retention,
        ModelRuntime(settings.model, settings.device).vae_identities())
    table, stats = extract_frames(validated, sources.data_root, store, policy,
                                  decode_timeout_s=settings.limits.decode_timeout_s,
                                  latent_keys=unneeded)
    note_decoded_ahead(store, settings.model.profile, shard, table)
    stats.computed += scanned.computed
    stats.extra["scans_computed"] = scanned.computed
    return stats


class DecodeAhead:
    """One shard decoded ahead at a time, in a helper process (its own memory and its own
    interpreter, so neither competes with the run for this process's memory or GIL):
    `start(next)` while the current shard runs, then `finish(next)` before that shard's own
    run starts (so the two never decode the same clips at once), `close()` at the end. A
    failure here is only logged: the shard's run decodes what is missing and reports any
    error itself."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._job: tuple[str, Future] | None = None

    def start(self, shard: str) -> None:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=die_with_parent,
                                             initargs=(os.getpid(),))
        self._job = (shard, self._pool.submit(decode_shard, self.settings, shard))

    def finish(self, shard: str) -> Reuse | None:
        """Wait for `shard`'s decoding if it is the one ahead; what it computed, or None."""
        job, self._job = self._job, None
        if job is None:
            return None
        started, future = job
        try:
            stats = future.result()
        except Exception as exc:  # noqa: BLE001 - the shard's own run meets and reports it
            log.warning("decoding %s ahead failed (its run will decode it): %s", started, exc)
            return None
        return stats if started == shard else None

    def close(self) -> None:
        self.finish("")
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
