"""Publishing a shard's files as the home of its latents and embeddings, and undoing that.

Once a shard is published its files hold every latent and embedding it serves; keeping the
same tensors in `cas/` as well would store each twice. So the store *adopts* them: a reference
under each key (`references`) and the full copy removed. Before gc removes a shard file (an
old version, a retired shard), what it is home to that is still wanted is *evicted*: written
back to `cas/` in full, so re-sharding and re-running never encode anything again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import polars as pl

from cog_assets.core.choices import ArtifactKind
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore
from cog_assets.store.references import (
    HOMED_KEYS,
    TensorHome,
    read_ref,
    ref_bytes,
    resolve,
)
from cog_assets.store.sealed_tensors import DamagedTensors


def artifact_homes(store: ContentStore, shard_dir: str, index: pl.DataFrame,
                   files: dict[str, str], digests: dict[str, dict[str, str]]
                   ) -> dict[tuple[str, str], dict[str, TensorHome]]:
    """(kind, key) -> where each tensor of that artefact lives in the shard's files: a
    clip's moments (and I2V image moments) by clip id, a caption's embedding by its sha256.
    `files`: tensor file column -> file name; `digests`: column -> tensor -> digest."""
    folder = store.relative(shard_dir)
    homes: dict[tuple[str, str], dict[str, TensorHome]] = {}

    def home(column: str, name: str) -> TensorHome | None:
        digest = digests.get(column, {}).get(name)
        return None if digest is None else TensorHome(f"{folder}/{files[column]}", name, digest)

    for row in index.iter_rows(named=True):
        latent = {"moments": home("latents_file", row["clip_id"])}
        if files.get("image_latents_file"):
            latent["image_moments"] = home("image_latents_file", row["clip_id"])
        latent = {name: h for name, h in latent.items() if h is not None}
        if "moments" in latent:
            homes.setdefault((ArtifactKind.latents, row["latent_key"]), latent)
        embedding = home("embeds_file", row["caption_sha256"])
        if embedding is not None:
            homes.setdefault((ArtifactKind.embeddings, row["embedding_key"]),
                             {"prompt_embedding": embedding})
    return homes


def adopt(store: ContentStore, kind: str, key: str, homes: Mapping[str, TensorHome]) -> None:
    """Make the shard files named by `homes` the artefact's home: the reference first, then
    the full copy removed (a reader that misses the copy finds the reference)."""
    store.write_bytes(store.path(layout.ref_path(kind, key)), ref_bytes(homes))
    _remove(store, store.artifact_path(kind, key))


def evict(store: ContentStore, kind: str, key: str, leaving: set[str]) -> bool:
    """Before files in `leaving` (store-relative) are removed: write the artefact back in full
    if its reference points into one of them. True if it was written back."""
    try:
        homes = read_ref(store, kind, key)
    except DamagedTensors:  # unreadable: nothing to save, the key is free to be computed
        _remove(store, store.path(layout.ref_path(kind, key)))
        return False
    if homes is None or not any(home.file in leaving for home in homes.values()):
        return False
    try:
        tensors = resolve(store, homes)
    except (FileNotFoundError, DamagedTensors):
        tensors = None  # gone or damaged: computed again when a run needs it
    if tensors is not None:
        store.put_tensors(kind, key, tensors)
    _remove(store, store.path(layout.ref_path(kind, key)))
    return tensors is not None


def evict_from(store: ContentStore, files: Iterable[str], indexes: Iterable[str],
               wanted: Callable[[str, str], bool] | None = None) -> int:
    """Evict what the shard indexes `indexes` reference from `files` (absolute paths, about
    to be removed); `wanted(kind, key)`: only those. Returns how many artefacts were written
    back in full."""
    leaving = {store.relative(path) for path in files if store.holds(path)}
    if not leaving:
        return 0  # nothing of the store's: no reference can point there
    written = 0
    for index_path in indexes:
        try:
            index = store.read_table(index_path)
        except Exception:  # noqa: BLE001 - unreadable: its references dangle, reads say missing
            continue
        for column, kind in HOMED_KEYS.items():
            if column in index.columns:
                for key in index[column].drop_nulls().unique().to_list():
                    if wanted is None or wanted(kind, key):
                        written += evict(store, kind, key, leaving)
    return written


def _remove(store: ContentStore, path: str) -> None:
    try:
        store.fs.rm(path)
    except FileNotFoundError:
        pass
