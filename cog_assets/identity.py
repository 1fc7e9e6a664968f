"""What shapes each asset's output besides its inputs: settings, model identity, transform
versions. Hashed per asset, this is the asset's Dagster `code_version`.

Dagster marks a shard's asset stale when its code version differs from the one its last
materialization recorded, or when an input's data version moved (the `uploads` fingerprint
for raw_manifest). So changing a setting that changes outputs (a bucket, a limit, the dtype,
the weights, the store) makes exactly the assets it affects stale in the UI, and the
backfill and the sensor skip every shard that nothing made stale (cog_assets.defs.freshness).
Settings that change how, not what, are left out: batch sizes, slicing, executor, device
index, decode workers.
"""

from __future__ import annotations

from cog_assets.config import Settings
from cog_assets.keys import artifact_key
from cog_assets.media import scan
from cog_assets.stages import embeddings, frames, latents

# Bump when the code's output changes for the same inputs and settings: the manifest rows
# (stages/manifest.py), the verdicts (stages/validation.py, media/probe.py, media/limits.py),
# the finished shard files (stages/dataset.py). Scene cuts and scores (media/scan.py),
# frames, latents and embeddings carry their own versions, which also enter their keys.
MANIFEST_VERSION = "manifest-v1"
VALIDATION_VERSION = "validation-v1"
DATASET_VERSION = "dataset-v1"

SHARD_ASSETS = ("raw_manifest", "scene_segments", "validated_clips", "frame_tensors",
                "vae_latents", "t5_embeddings", "training_dataset")


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
                         "version": MANIFEST_VERSION},
        "scene_segments": {"segments": _dump(settings.segments), "limits": _dump(settings.limits),
                           "store": store, "version": scan.SCAN_VERSION},
        "validated_clips": {**sampling, "limits": _dump(settings.limits), "store": store,
                            "tokenizer": weights.identity("tokenizer"),
                            "version": VALIDATION_VERSION},
        "frame_tensors": {**sampling, "store": store, "version": frames.FRAMES_VERSION},
        "vae_latents": {"model": weights.identity("vae"), "dtypes": dtypes,
                        "tiling": settings.device.vae_tiling, "store": store,
                        "version": latents.LATENTS_VERSION},
        "t5_embeddings": {"model": weights.identity("text_encoder"), "dtypes": dtypes,
                          "max_length": runtime.profile.text_max_length, "store": store,
                          "version": embeddings.EMBEDDINGS_VERSION},
        "training_dataset": {"profile": settings.model.profile, "store": store,
                             "version": DATASET_VERSION},
    }


def code_versions(settings: Settings) -> dict[str, str]:
    """Per asset name, a short hash of its output identity: its Dagster code version."""
    return {name: artifact_key("code_version", **parts)[:16]
            for name, parts in output_identities(settings).items()}

