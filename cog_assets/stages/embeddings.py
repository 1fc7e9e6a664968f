"""t5_embeddings: one T5 last hidden state per distinct caption of the accepted clips."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from cog_assets.choices import Status
from cog_assets.keys import artifact_key
from cog_assets.layout import ArtifactKind
from cog_assets.models.text_encoder import TextEncoder
from cog_assets.stages.common import Reuse, reusable
from cog_assets.store import ContentStore

EMBEDDINGS_VERSION = "t5-last-hidden-v1"

EMBEDDINGS_SCHEMA = {
    "caption_sha256": pl.String, "caption": pl.String, "embedding_key": pl.String,
    "status": pl.String,
}


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


def encode_captions(validated: pl.DataFrame, store: ContentStore, identity: TextIdentity,
                    load_encoder: Callable[[], TextEncoder], batch_size: int
                    ) -> tuple[pl.DataFrame, Reuse]:
    """Encode the distinct captions the store lacks, in batches; the encoder loads only if needed."""
    stats = Reuse()
    started = time.perf_counter()
    captions = (validated.filter(pl.col("accepted"))
                .select("caption_sha256", "caption").unique("caption_sha256", keep="first")
                .sort("caption_sha256"))
    records = []
    todo = []
    for row in captions.iter_rows(named=True):
        record = {**row, "embedding_key": identity.key(row["caption_sha256"]),
                  "status": Status.reused}
        records.append(record)
        # the shard is built from the embeddings in this run: their full check costs one read
        if reusable(store, ArtifactKind.embeddings, record["embedding_key"], stats, full=True):
            stats.reused += 1
        else:
            todo.append(record)
    if todo:
        encoder = load_encoder()
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            embeds = encoder.encode([r["caption"] for r in batch])
            for record, embed in zip(batch, embeds):
                store.put_tensors(ArtifactKind.embeddings, record["embedding_key"],
                                  {"prompt_embedding": embed},
                                  {"caption_sha256": record["caption_sha256"]})
                record["status"] = Status.computed
                stats.computed += 1
        del encoder
    stats.seconds = time.perf_counter() - started
    return pl.DataFrame(records, schema=EMBEDDINGS_SCHEMA), stats
