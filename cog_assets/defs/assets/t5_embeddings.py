"""t5_embeddings: per distinct caption, the T5 last hidden state; a GPU step (the `gpu` pool)."""

from collections.abc import Iterator

import polars as pl
from dagster import AssetCheckResult, AssetExecutionContext, AssetsDefinition, Output, asset

from cog_assets.core.choices import ArtifactKind
from cog_assets.defs.asset_checks import EMBEDDING_CHECKS, embeddings_match_profile
from cog_assets.defs.assets.groups import GPU_POOL, GROUP
from cog_assets.defs.leasing import step_lease
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import (
    DeviceResource,
    ModelResource,
    StoreResource,
    runtime,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.defs.versions import data_version
from cog_assets.stages.embeddings import encode_captions


def t5_embeddings_asset(op_tags: dict) -> AssetsDefinition:
    """The asset, in the `gpu` pool, with `op_tags` (Kubernetes GPUs)."""

    @asset(partitions_def=shards_partitions, group_name=GROUP,
           kinds={"pytorch", "transformers"}, pool=GPU_POOL, op_tags=op_tags,
           check_specs=EMBEDDING_CHECKS)
    def t5_embeddings(context: AssetExecutionContext, validated_clips: pl.DataFrame,
                      model: ModelResource, device: DeviceResource,
                      store: StoreResource) -> Iterator[Output | AssetCheckResult]:
        """Per distinct caption, the T5 last hidden state [226, D], deduplicated by hash."""
        refuse_output_overrides(context, model=model, device=device, store=store)
        models = runtime(model, device)
        content, identity = store.open(), models.text_identity()
        captions = validated_clips.filter(pl.col("accepted"))["caption_sha256"].unique()
        with step_lease(context, content) as lease, models.step_device() as on:
            lease.hold(ArtifactKind.embeddings, [identity.key(c) for c in captions])
            table, stats = encode_captions(validated_clips, content, identity,
                                           lambda: models.text_encoder(on),
                                           device.text_batch_size)
        yield Output(table, data_version=data_version("t5_embeddings", table),
                     metadata={"captions": len(table), **stats.as_metadata()})
        yield embeddings_match_profile(table, content, models.profile)

    return t5_embeddings
