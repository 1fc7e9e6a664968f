"""vae_latents: the VAE posterior moments of every clip's frames, batched per bucket.

For I2V profiles the artefact also holds `image_moments`, the moments of the clean first
frame encoded on its own ([32, 1, H/8, W/8]), which I2V trainers concatenate as conditioning.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl
import torch

from cog_assets.core.choices import ArtifactKind, Status, VaeCompile
from cog_assets.core.clip_row import columns
from cog_assets.core.keys import VaeIdentity
from cog_assets.models.vae import frames_to_vae_input, vae_input_on_device
from cog_assets.models.vae_compile import BucketEncoder, Decision
from cog_assets.models.vae_process import VaeProcess
from cog_assets.runtime.heap import map_large_blocks, release_free_memory
from cog_assets.runtime.progress import Progress
from cog_assets.stages.common import Reuse, reusable
from cog_assets.store.content_store import ContentStore, CorruptArtifact

if TYPE_CHECKING:
    from diffusers import AutoencoderKLCogVideoX

OUTPUT_OF = {"frames": "moments", "first_frame": "image_moments"}  # input -> stored tensor
LATENTS_SCHEMA = columns("clip_id", "frames_key", "latent_key", "bucket", "status")


class DamagedFrames(Exception):
    """A clip's frames file failed its digest check when read (it is quarantined)."""

    def __init__(self, clip_id: str, error: CorruptArtifact):
        super().__init__(str(error))
        self.clip_id, self.error = clip_id, error

    def describe(self) -> str:
        """As the summary's `corrupt` lists a damaged artefact that was computed again."""
        e = self.error
        return (f"{e.kind} artefact {e.key} at {e.path}: {e.reason}; moved to {e.moved_to}, "
                f"decoded again (clip {self.clip_id})")


class MissingFrames(LookupError):
    """A clip needs new latents but its frames are no longer in the store."""

    def __init__(self, clip_id: str, frames_key: str):
        super().__init__(
            f"{clip_id}: its frames ({frames_key}) are not in the store, and its latents for "
            "this VAE, dtype and tiling are missing too (frame tensors are a cache, dropped "
            "once their shard is published: frames_retention); materialize frame_tensors "
            "and vae_latents of this shard again")
        self.clip_id, self.frames_key = clip_id, frames_key


def encode_latents(frames: pl.DataFrame, store: ContentStore, identity: VaeIdentity,
                   load_vae: Callable[[], AutoencoderKLCogVideoX], batch_size: int, *,
                   prefetch_batches: int | None = None,
                   redecode: Callable[[pl.DataFrame], object] | None = None,
                   encoder_for: EncoderFor | None = None, progress: str | None = None
                   ) -> tuple[pl.DataFrame, Reuse]:
    """Encode the clips whose moments are missing; the VAE is loaded only if one is.

    Clips are batched per bucket. A background thread reads the first batch from the store
    while the VAE loads, and the next `prefetch_batches` batches (normalised to the VAE's
    input, pinned for a GPU) while the VAE encodes the current one: at most
    1 + prefetch_batches batches of frames are held. By default (None) one batch ahead where
    the VAE runs on a GPU, none on the CPU: there the VAE already keeps every core busy, so
    reading ahead saves nothing and holds another batch (about 110 MiB more at the peak of a
    49x240x368 clip).

    `encoder_for(vae, shape, clips)` gives each bucket's encoder, eager or compiled
    (cog_assets.models.vae_compile; default: eager). With `progress` (a label, e.g. the
    shard and step) the clips encoded are shown as they finish (runtime.progress). Where the
    step's seconds went is in the stats: loading the VAE, encoding, waiting for frames,
    writing moments (`vae_load_s`, `encode_s`, `read_wait_s`,
    `write_s`), and `encode_s_per_clip`, the figure to hold against a bare `vae._encode`.

    Frames are a cache: those of clips to encode that are no longer in the store are handed
    to `redecode` (rows of `frames`) first, which decodes them again (counted in
    `frames_decoded_again`); without it, MissingFrames names the first such clip. A frames
    file found damaged when read (quarantined) is a cache miss too: its clip is decoded again
    the same way and listed in the stats' `corrupt` (the summary's "corrupt, replaced").
    """
    stats = Reuse()
    started = time.perf_counter()
    ok = frames.filter(pl.col("status") != Status.rejected)
    records = {}
    todo: dict[str, list[dict]] = {}
    for row in ok.iter_rows(named=True):
        key = identity.key(row["frames_key"])
        record = {"clip_id": row["clip_id"], "frames_key": row["frames_key"],
                  "latent_key": key, "bucket": row["bucket"], "status": Status.reused}
        records[row["clip_id"]] = record
        # the shard is built from the moments in this run: their full check costs one read
        if reusable(store, ArtifactKind.latents, key, stats, full=True):
            stats.reused += 1
        else:
            todo.setdefault(row["bucket"], []).append(record)
    if todo:
        gone = [r for rows in todo.values() for r in rows
                if not store.has(ArtifactKind.frames, r["frames_key"])]
        if gone and redecode is None:
            raise MissingFrames(gone[0]["clip_id"], gone[0]["frames_key"])
        if gone:
            redecode(ok.filter(pl.col("clip_id").is_in([r["clip_id"] for r in gone])))
            stats.extra["frames_decoded_again"] = len(gone)
        again = None if redecode is None else (
            lambda clip_id: redecode(ok.filter(pl.col("clip_id") == clip_id)))
        _encode_todo(todo, store, load_vae, batch_size, prefetch_batches,
                     encoder_for or eager_encoder, progress, stats, again)
    stats.seconds = time.perf_counter() - started
    return pl.DataFrame(list(records.values()), schema=LATENTS_SCHEMA), stats


EncoderFor = Callable[["AutoencoderKLCogVideoX", tuple[int, ...], int], BucketEncoder]


def eager_encoder(vae: AutoencoderKLCogVideoX, shape: tuple[int, ...], clips: int
                  ) -> BucketEncoder:
    """Every bucket eager (what encode_latents does unless told otherwise)."""
    if isinstance(vae, VaeProcess):  # a VAE in its own process
        return vae.bucket_encoder(shape, clips, policy=VaeCompile.off, cache_dir=None,
                                  model="", dtype="")
    return BucketEncoder(vae, Decision(False, "eager"))


def _encode_todo(todo: dict[str, list[dict]], store: ContentStore,
                 load_vae: Callable[[], AutoencoderKLCogVideoX], batch_size: int,
                 prefetch_batches: int | None, encoder_for: EncoderFor,
                 progress: str | None, stats: Reuse,
                 decode_again: Callable[[str], object] | None) -> None:
    """Encode and store the moments of `todo` (bucket -> records), timing each part.

    A damaged frames file (DamagedFrames) is handed to `decode_again(clip_id)` once per
    clip and the batches from the one that met it go on, with the VAE still loaded."""
    batches = [rows[i:i + batch_size] for rows in todo.values()
               for i in range(0, len(rows), batch_size)]
    map_large_blocks()  # the VAE's activations: returned to the OS when freed
    target = _Target()  # filled once the VAE is loaded; the loader waits for it
    spent = dict.fromkeys(("vae_load_s", "encode_s", "read_wait_s", "write_s"), 0.0)
    encoders: dict[str, BucketEncoder] = {}
    meter = Progress(progress, sum(map(len, todo.values())))
    vae = None
    replaced: set[str] = set()  # clips whose damaged frames were decoded again
    with meter:
        while batches:
            done = 0
            try:
                with BatchStream(store, batches, target, ahead=0) as stream:
                    if vae is None:
                        clock = time.perf_counter()
                        vae = load_vae()  # the first batch is read meanwhile
                        target.set(vae)
                        spent["vae_load_s"] = time.perf_counter() - clock
                    stream.read_ahead(prefetch_batches if prefetch_batches is not None
                                      else int(target.device.type != "cpu"))
                    clock = time.perf_counter()
                    for batch, inputs in stream:
                        spent["read_wait_s"] += time.perf_counter() - clock
                        outputs = _encode_batch(vae, batch, inputs, todo, encoders,
                                                encoder_for, target)
                        clock = time.perf_counter()
                        for i, record in enumerate(batch):
                            store.put_tensors(ArtifactKind.latents, record["latent_key"],
                                              {name: value[i] for name, value in
                                               outputs.items()},
                                              {"clip_id": record["clip_id"]})
                            record["status"] = Status.computed
                            stats.computed += 1
                        spent["write_s"] += time.perf_counter() - clock
                        done += 1
                        del inputs, outputs  # before the loader may read the batch after next
                        release_free_memory()
                        meter.advance(len(batch))
                        clock = time.perf_counter()
            except DamagedFrames as damaged:
                # a damaged frames file (quarantined by the read) is a cache miss, as a
                # damaged latent is: decode the clip again and go on from this batch
                if decode_again is None or damaged.clip_id in replaced:
                    raise damaged.error from None
                replaced.add(damaged.clip_id)
                stats.corrupt.append(damaged.describe())
                decode_again(damaged.clip_id)
                stats.extra["frames_decoded_again"] = (
                    stats.extra.get("frames_decoded_again", 0) + 1)
                batches = batches[done:]
                continue
            batches = []
    del vae
    for encoder in encoders.values():
        encoder.finish()
    spent["encode_s"] = sum(e.encode_s for e in encoders.values())
    stats.extra.update({name: round(value, 3) for name, value in spent.items()})
    stats.extra["encode_s_per_clip"] = round(spent["encode_s"] / max(1, stats.computed), 3)
    stats.extra["vae_compile"] = "; ".join(
        f"{b}: {'compiled' if e.compiled else 'eager'} ({e.decision.why})"
        for b, e in encoders.items())
    if any(e.compiled for e in encoders.values()):
        stats.extra["compiled_graphs"] = sum(e.graphs for e in encoders.values())


def _encode_batch(vae: AutoencoderKLCogVideoX, batch: list[dict],
                  inputs: dict[str, torch.Tensor], todo: dict[str, list[dict]],
                  encoders: dict[str, BucketEncoder], encoder_for: EncoderFor,
                  target: _Target) -> dict[str, torch.Tensor]:
    """One batch's moments by output name, each bucket's encoder made on its first batch."""
    outputs = {}
    for name, x in inputs.items():  # I2V: the first frame has an encoder of its own
        if not target.remote:  # the VAE process normalises uint8 frames itself
            x = vae_input_on_device(x, target.device, target.dtype)
        which = f"{batch[0]['bucket']}" + ("" if name == "frames" else f" {name}")
        if which not in encoders:  # deciding and setting up count as encoding
            setup = time.perf_counter()
            shape = x.shape[1:4] if x.dtype == torch.uint8 else x.shape[2:]  # [F, H, W]
            encoders[which] = encoder_for(vae, tuple(shape), len(todo[batch[0]["bucket"]]))
            encoders[which].setup_s = time.perf_counter() - setup
        outputs[OUTPUT_OF[name]] = encoders[which](x)
    return outputs


class _Target:
    """The loaded VAE's device and dtype, which the loader needs before it can convert, and
    whether it runs in a process of its own (`remote`: sent uint8 frames, 4x fewer bytes,
    normalised there)."""

    def __init__(self):
        self._ready = threading.Event()
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.remote = False

    def set(self, vae: AutoencoderKLCogVideoX) -> None:
        self.remote = isinstance(vae, VaeProcess)
        if self.remote:
            self.device, self.dtype = vae.device, vae.dtype
        else:
            param = next(vae.parameters())
            self.device, self.dtype = param.device, param.dtype
        self._ready.set()

    def wait(self, stop: threading.Event) -> bool:
        while not self._ready.wait(0.1):
            if stop.is_set():
                return False
        return True


class BatchStream:
    """Iterate (batch rows, {"frames": x, ["first_frame": x]}) with x the VAE's input
    [B, 3, F, H, W] (encode_moments' own normalisation, in the VAE's dtype) for a VAE on the
    CPU, or the uint8 frames [B, F, H, W, 3] for one on another device (vae_input_on_device
    finishes them there), read by a background thread at most `ahead` batches ahead of the
    consumer.

    A batch counts as held until the consumer asks for the next one, so at most 1 + ahead
    batches exist at once. Errors of the reader are raised to the consumer."""

    def __init__(self, store: ContentStore, batches: list[list[dict]], target: _Target,
                 ahead: int = 1):
        self.store, self.batches, self.target = store, batches, target
        self._permits = threading.Semaphore(1 + max(0, ahead))
        self._ready: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="cog-assets-latents-reader",
                                        daemon=True)

    def __enter__(self) -> "BatchStream":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._permits.release()  # wake the reader if it waits for room
        self._thread.join()

    def read_ahead(self, batches: int) -> None:
        """Let the reader run `batches` more batches ahead of the consumer."""
        for _ in range(max(0, batches)):
            self._permits.release()

    @property
    def buffered(self) -> int:
        """Batches read and waiting for the consumer (not counting the one it holds)."""
        return sum(isinstance(item, tuple) for item in list(self._ready.queue))

    def __iter__(self):
        first = True
        while True:
            if not first:
                self._permits.release()  # the consumer is done with the previous batch
            first = False
            item = self._ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _read(self) -> None:
        try:
            for batch in self.batches:
                self._permits.acquire()
                if self._stop.is_set():
                    return
                frames = self._load(batch)  # while the VAE loads, for the first batch
                if not self.target.wait(self._stop):
                    return
                self._ready.put((batch, self._inputs(frames)))
                del frames
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._ready.put(exc)
        else:
            self._ready.put(None)

    def _load(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        """uint8 [B, F, H, W, 3] frames (and [B, 1, H, W, 3] first frames) from the store."""
        loaded = []
        for r in batch:
            try:
                loaded.append(self.store.get_tensors(ArtifactKind.frames, r["frames_key"]))
            except FileNotFoundError:
                raise MissingFrames(r["clip_id"], r["frames_key"]) from None
            except CorruptArtifact as exc:
                raise DamagedFrames(r["clip_id"], exc) from None
        frames = {"frames": torch.stack([t["frames"] for t in loaded])}
        if "first_frame" in loaded[0]:  # I2V: the clean first frame, as one frame
            frames["first_frame"] = torch.stack([t["first_frame"][None] for t in loaded])
        return frames

    def _inputs(self, frames: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The VAE's input on the CPU; for a VAE elsewhere the uint8 frames (pinned for a
        GPU), normalised on its device (vae_input_on_device): 4x fewer bytes over the bus
        than float32, and no float work left on the CPU, which a GPU's feed is bound by."""
        inputs = {}
        for name, value in frames.items():
            if self.target.device.type == "cpu" and not self.target.remote:  # as encode_moments
                inputs[name] = frames_to_vae_input(value).to(dtype=self.target.dtype)
            else:
                inputs[name] = value.pin_memory() if self.target.device.type == "cuda" \
                    else value
        return inputs
