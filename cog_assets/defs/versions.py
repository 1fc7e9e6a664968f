"""Each asset's versions: its code version (what shapes its output besides its inputs:
settings, model identity, transform versions) and its data version (what it produced).

Hashed per asset, the output identity is the asset's Dagster `code_version`.

Dagster marks a shard's asset stale when its code version differs from the one its last
materialization recorded, or when an input's data version moved (the `uploads` fingerprint
for raw_manifest). So changing a setting that changes outputs (a bucket, a limit, the dtype,
the weights, the store) makes exactly the assets it affects stale in the UI, and the
backfill and the sensor skip every shard that nothing made stale (cog_assets.defs.freshness).
Settings that change how, not what, are left out: batch sizes, slicing, executor, device
index, decode workers.
"""

from __future__ import annotations

import polars as pl
from dagster import DataVersion

from cog_assets.core import keys
from cog_assets.core.config import Settings
from cog_assets.core.keys import artifact_key, data_version_of

SHARD_ASSETS = ("raw_manifest", "scene_segments", "clip_captions", "validated_clips",
                "frame_tensors", "vae_latents", "t5_embeddings", "training_dataset")


def _dump(group) -> dict:
    return group.model_dump(mode="json")


def output_identities(settings: Settings) -> dict[str, dict]:
    """Per asset, everything besides its inputs that decides its output."""
    from cog_assets.models.runtime import ModelRuntime

    # From the settings' words, never a device: the code server (a CPU pod), the CLI and the
    # GPU step's worker compute the same versions, and a host without the device loads.
    runtime = ModelRuntime(settings.model, settings.device)
    weights, dtypes = runtime.weights, runtime.dtype_names()
    store = settings.store.url  # where the tables and artefacts are: another store has none
    sampling = {"frames": _dump(settings.frames), "profile": settings.model.profile}
    return {
        "raw_manifest": {"sources": _dump(settings.sources), "store": store,
                         "version": keys.MANIFEST_VERSION},
        "scene_segments": {"segments": _dump(settings.segments), "limits": _dump(settings.limits),
                           "store": store, "version": keys.SCAN_VERSION,
                           "segments_version": keys.SEGMENTS_VERSION},
        "clip_captions": caption_identity(settings, dtypes, weights.identity("tokenizer")),
        "validated_clips": {**sampling, "limits": _dump(settings.limits), "store": store,
                            "tokenizer": weights.identity("tokenizer"),
                            "version": keys.VALIDATION_VERSION},
        "frame_tensors": {**sampling, "store": store, "version": keys.FRAMES_VERSION},
        "vae_latents": {"model": weights.identity("vae"), "dtypes": dtypes,
                        "tiling": settings.device.vae_tiling, "store": store,
                        "version": keys.LATENTS_VERSION},
        "t5_embeddings": {"model": weights.identity("text_encoder"), "dtypes": dtypes,
                          "max_length": runtime.profile.text_max_length, "store": store,
                          "version": keys.EMBEDDINGS_VERSION},
        "training_dataset": {"profile": settings.model.profile, "store": store,
                             "version": keys.DATASET_VERSION},
    }


# How captions are written, not what: left out of clip_captions' code version.
CAPTION_HOW = ("caption_endpoint", "caption_batch_size", "caption_concurrency",
               "caption_timeout_s", "caption_retries", "caption_prompt", "caption_polish_prompt")


def caption_identity(settings: Settings, dtypes: list[str], tokenizer: str) -> dict:
    """clip_captions' output identity: with the step off (caption_mode manifest, no
    polishing) only its version, so no caption setting makes anything stale; on, the settings
    that shape captions, the captioners' identities (with the prompts' text, never the
    endpoint's URL or key), the trigger word and the tokenizer that counts for the limit."""
    from cog_assets.captions.tools import captioner_identity, polisher_identity

    captions = settings.captions
    parts: dict = {"store": settings.store.url, "version": keys.CAPTIONS_VERSION}
    if not captions.active:
        return parts
    writers = [captioner_identity(captions, dtype) for dtype in dtypes]
    polisher = polisher_identity(captions)
    return {**parts, "captions": {k: v for k, v in _dump(captions).items() if k not in CAPTION_HOW},
            "captioners": [None if w is None else [w.model, w.prompt] for w in writers],
            "polisher": None if polisher is None else [polisher.model, polisher.prompt],
            "id_token": settings.sources.id_token, "tokenizer": tokenizer}


def code_versions(settings: Settings) -> dict[str, str]:
    """Per asset name, a short hash of its output identity: its Dagster code version."""
    return {name: artifact_key("code_version", **parts)[:16]
            for name, parts in output_identities(settings).items()}



# Per shard asset, the columns whose values, row by row, make its data version: what it
# produced, so a re-run that changed nothing keeps its version and sets nothing in motion.
# One column: its values are the keys themselves.
DATA_VERSION_COLUMNS = {
    "raw_manifest": ("clip_id", "content_hash", "caption_sha256", "issue_reason"),
    "scene_segments": ("clip_id", "content_hash", "caption_sha256", "issue_reason", "scan_key"),
    "clip_captions": ("clip_id", "content_hash", "caption_sha256", "caption_source",
                      "issue_reason"),
    "validated_clips": ("clip_id", "content_hash", "accepted", "reason"),
    "frame_tensors": ("frames_key",),
    "vae_latents": ("latent_key",),
    "t5_embeddings": ("embedding_key",),
}


def data_version(asset: str, table: pl.DataFrame) -> DataVersion:
    """The data version of one shard asset's table (DATA_VERSION_COLUMNS)."""
    columns = DATA_VERSION_COLUMNS[asset]
    if len(columns) == 1:
        return DataVersion(data_version_of(table[columns[0]]))
    return DataVersion(data_version_of("|".join(str(value) for value in row)
                                       for row in table.select(columns).iter_rows()))


def dataset_data_version(index: pl.DataFrame, rejects: pl.DataFrame) -> DataVersion:
    """training_dataset's: the latents and embeddings it serves and the clips it rejected."""
    return DataVersion(data_version_of([*index["latent_key"], *index["embedding_key"],
                                        *rejects["clip_id"]]))
