"""t5_embeddings: one T5 last hidden state per distinct caption of the accepted clips."""

from __future__ import annotations

import time
from collections.abc import Callable

import polars as pl

from cog_assets.core.choices import ArtifactKind, Status
from cog_assets.core.clip_row import columns
from cog_assets.core.keys import TextIdentity
from cog_assets.models.text_encoder import TextEncoder
from cog_assets.stages.common import Reuse, reusable
from cog_assets.store.content_store import ContentStore

EMBEDDINGS_SCHEMA = columns("caption_sha256", "caption", "embedding_key", "status")




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
