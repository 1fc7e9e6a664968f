"""Identities: the hashes that name artefacts, captions, source files and data versions.

An artefact's key hashes everything that determines its bytes, so equal keys mean equal
bytes: that is what lets a re-run, a re-shard or another machine reuse work. Every key recipe
lives here, with the transform versions that enter the keys and the code versions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from cog_assets.core.choices import ArtifactKind

# Transform versions: bump one when the code's output changes for the same inputs and
# settings. Those of artefacts enter their keys; all enter the assets' code versions.
MANIFEST_VERSION = "manifest-v1"  # the manifest rows (stages/manifest.py)
VALIDATION_VERSION = "validation-v1"  # the verdicts (stages/validation.py, media/probe, limits)
DATASET_VERSION = "dataset-v2"  # the finished shard files (stages/dataset.py); v2: versioned
#                                rejects, the VAE's scaling and superseded versions recorded
SCAN_VERSION = "scan-v2"  # a source's cuts and quality samples (media/scan.py); v2: motion
#                           counted only where the picture changed beyond compression noise
FRAMES_VERSION = "frames-v1"  # the decoder's output bytes (media/decode.py)
LATENTS_VERSION = "vae-moments-v1"  # the VAE's moments (stages/latents.py)
EMBEDDINGS_VERSION = "t5-last-hidden-v1"  # T5's last hidden state (stages/embeddings.py)
CAPTION_FRAMES_VERSION = "caption-frames-v1"  # the frames a captioner sees (captions/frames.py)
CAPTIONS_VERSION = "captions-v1"  # the caption step's choices and checks (stages/captions.py)
CLIP_FILE_VERSION = "clip-file-v1"  # a clip cut out of its source as a file (media/clip_cut.py)
SEGMENTS_VERSION = "segments-v2"  # how scenes become segments (media/scene_cuts.py)

HASH_CHUNK = 1 << 20


def artifact_key(kind: str, **parts: Any) -> str:
    """sha256 of a canonical JSON of everything that determines an artefact's bytes."""
    payload = json.dumps({"kind": str(kind), **parts}, sort_keys=True, separators=(",", ":"),
                         default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def caption_sha256(caption: str) -> str:
    """A caption's identity; also the file name CogVideo's finetune cache gives its embedding."""
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


def file_sha256(path: str) -> str:
    """Content hash of a local file, streamed so large videos are never held in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


DIGEST = "blake3"  # the digest every artefact and finished file is checked with


def digest_of(data: bytes | bytearray | memoryview) -> str:
    """The integrity digest of some bytes (blake3: several GB/s, far less than reading them)."""
    return blake3.blake3(data).hexdigest()


def file_digest(path: str | Path) -> str:
    """digest_of a local file's bytes, streamed."""
    hasher = blake3.blake3()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK * 8):
            hasher.update(chunk)
    return hasher.hexdigest()


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


def frames_key(spec: Mapping[str, Any], content_hash: str, first_frame: str | None = None,
               segment: tuple[float, float] | None = None) -> str:
    """The key of one clip's frames: its bytes, the supplied I2V image and the frame spec's
    fields, and for a segment of a longer video its (start_s, end_s)."""
    window = {} if segment is None else {"segment": list(segment)}
    return artifact_key(ArtifactKind.frames, content=content_hash, first_frame=first_frame,
                        version=FRAMES_VERSION, **window, **spec)


def clip_file_key(content_hash: str, start_s: float, end_s: float | None,
                  encoding: Mapping[str, Any]) -> str:
    """The key of one clip's file: its source's bytes, the stretch cut out of it (to the
    millisecond, as clip ids name it; `end_s` None: to the end of the data, a whole file
    whose headers give no duration) and the encoding settings (`ClipEncoding`). Not the
    caption: a new caption cuts nothing."""
    end = None if end_s is None else round(end_s, 3)
    return artifact_key(ArtifactKind.clip_file, content=content_hash,
                        segment=[round(start_s, 3), end], **encoding,
                        version=CLIP_FILE_VERSION)


def scan_key(content_hash: str, scan_parts: Mapping[str, Any]) -> str:
    """The key of one video's scan: its bytes and everything the scan's output depends on
    (`ScanSpec.key_parts`)."""
    return artifact_key(ArtifactKind.scene_scan, content=content_hash, **scan_parts,
                        version=SCAN_VERSION)


@dataclass(frozen=True)
class VaeIdentity:
    """What decides the moments' bytes besides the frames: weights, dtype, tiling.

    Not how they were computed: eager or compiled (vae_compile), oneDNN's convolutions or
    aten's (models/cpu_convs.py), on how many threads, on which machine: those change only
    the order of float sums (within 1e-4: test_vae_compile.py, test_cpu_convs.py), so they
    share keys and a change of vae_compile re-encodes nothing."""

    model: str
    dtype: str
    tiling: bool

    def key(self, frames_key: str) -> str:
        return artifact_key(ArtifactKind.latents, frames=frames_key, model=self.model,
                            dtype=self.dtype, tiling=self.tiling, version=LATENTS_VERSION)


@dataclass(frozen=True)
class TextIdentity:
    """What decides an embedding's bytes besides the caption."""

    model: str
    dtype: str
    max_length: int

    def key(self, caption_sha256: str) -> str:
        return artifact_key(ArtifactKind.embeddings, caption=caption_sha256, model=self.model,
                            dtype=self.dtype, max_length=self.max_length,
                            version=EMBEDDINGS_VERSION)


def caption_frames_recipe(content_hash: str | None, segment: tuple[float, float] | None,
                          count: int, size: int) -> dict[str, Any]:
    """What decides the frames a captioner is shown: the video's bytes, the clip's window
    (None: the whole file), how many frames and how large (their longest side)."""
    return {"content": content_hash, "segment": None if segment is None else list(segment),
            "count": count, "size": size, "version": CAPTION_FRAMES_VERSION}


def thumbnail_key(frames_recipe: Mapping[str, Any]) -> str:
    """The key of the middle-frame thumbnail of a clip that was never decoded for training
    (one that still needs a caption), from its caption-frames recipe with one frame."""
    return artifact_key(ArtifactKind.thumbnail, frames=dict(frames_recipe))


@dataclass(frozen=True)
class CaptionerIdentity:
    """What decides a written caption besides what the model is shown: the model (a local
    model's weights, revision and dtype, or an endpoint's model name: never its URL or key),
    the prompt and the generation settings."""

    model: str
    prompt: str
    max_tokens: int
    temperature: float

    def _parts(self) -> dict[str, Any]:
        return {"model": self.model, "prompt": caption_sha256(self.prompt),
                "max_tokens": self.max_tokens, "temperature": self.temperature,
                "version": CAPTIONS_VERSION}

    def caption_key(self, frames_recipe: Mapping[str, Any]) -> str:
        """A caption written from the frames of `frames_recipe` (caption_frames_recipe)."""
        return artifact_key(ArtifactKind.caption, step="caption", frames=dict(frames_recipe),
                            **self._parts())

    def polish_key(self, caption_sha256: str) -> str:
        """A caption rewritten from the caption of that hash (the prompt: the system prompt)."""
        return artifact_key(ArtifactKind.caption, step="polish", caption=caption_sha256,
                            **self._parts())
