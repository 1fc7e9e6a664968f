"""The whole asset graph through Dagster, on generated videos and the tiny profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from dagster import AssetKey, AssetRecordsFilter, instance_for_test

from cog_assets.core.config import Settings
from cog_assets.defs.build import build_definitions
from cog_assets.defs.runs import materialize_shards
from cog_assets.loader import CogVideoXLatentDataset
from cog_assets.media.contact_sheet import LABEL_LINE, THUMB_HEIGHT
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.models.runtime import PROCESS_MODELS
from cog_assets.sources.sharding import shard_for
from cog_assets.store import layout

MODEL_LOADS: dict[str, int] = {}
FRAMES_METADATA: dict[str, dict] = {}  # the first run's frame_tensors metadata, per shard


TOKEN_COUNTS: dict[str, tuple[list, list]] = {}  # per shard: the first run's, the rerun's


def _token_counts(settings: Settings, shard: str) -> list:
    path = Path(settings.store.url) / layout.table_path("tiny", "validated_clips", shard)
    return pl.read_parquet(path).sort("clip_id")["caption_tokens"].to_list()


@pytest.fixture(scope="module")
def run_twice(tmp_path_factory):
    """Materialize every shard of a 2-shard dataset, then again with nothing changed
    (forced: an up-to-date shard is not launched otherwise)."""
    root = tmp_path_factory.mktemp("data")
    write_test_dataset(root, 6)
    settings = Settings.of(data_root=str(root), store=str(tmp_path_factory.mktemp("store")),
                           shards=2, device="cpu")
    with instance_for_test() as instance:
        PROCESS_MODELS.clear()
        loads = PROCESS_MODELS.loads
        first = materialize_shards(settings, instance)
        MODEL_LOADS["first run"] = PROCESS_MODELS.loads - loads
        for shard in first:
            [record] = instance.fetch_materializations(AssetRecordsFilter(
                asset_key=AssetKey("frame_tensors"), asset_partitions=[shard]), limit=1).records
            FRAMES_METADATA[shard] = {k: getattr(v, "value", v) for k, v in
                                      record.asset_materialization.metadata.items()}
        event = instance.get_latest_materialization_event(AssetKey("frame_tensors"))
        sheet = {k: v.value for k, v in event.asset_materialization.metadata.items()
                 if k.startswith("contact_sheet")}
        counted = {shard: _token_counts(settings, shard) for shard in first}
        PROCESS_MODELS.clear()
        loads = PROCESS_MODELS.loads
        second = materialize_shards(settings, instance, force=True)
        TOKEN_COUNTS.update({shard: (counted[shard], _token_counts(settings, shard))
                             for shard in first})
        MODEL_LOADS["unchanged rerun"] = PROCESS_MODELS.loads - loads
        yield settings, first, second, sheet


def test_definitions_load_with_eight_assets_and_checks():
    defs = build_definitions(Settings())
    graph = defs.resolve_asset_graph()
    names = {key.path[-1] for key in graph.materializable_asset_keys
             if graph.get(key).group_name == "cogvideox"}
    assert names == {"raw_manifest", "scene_segments", "clip_captions", "validated_clips",
                     "frame_tensors", "vae_latents", "t5_embeddings", "training_dataset"}
    assert AssetKey("uploads") in graph.observable_asset_keys  # the raw files, observed
    assert len(list(graph.asset_check_keys)) == 5
    for gpu_step in ("vae_latents", "t5_embeddings"):
        assert graph.get(AssetKey(gpu_step)).pools == {"gpu"}
    # captions are written by an endpoint or not at all: no GPU to wait for
    assert not graph.get(AssetKey("clip_captions")).pools
    local = build_definitions(Settings.of(caption_mode="fill", caption_model="tiny"))
    assert local.resolve_asset_graph().get(AssetKey("clip_captions")).pools == {"gpu"}


@pytest.mark.slow
def test_two_shards_materialize_with_checks_passing(run_twice):
    settings, first, _, _ = run_twice
    assert sorted(first) == ["shard-00000", "shard-00001"]
    for summary in first.values():
        assert summary.success, summary.failure
        assert summary.failed_checks == []
    assert sum(s.clips for s in first.values()) == 7
    assert sum(s.accepted for s in first.values()) == 6
    assert sum(s.computed for s in first.values()) > 0


@pytest.mark.slow
def test_a_backfill_loads_each_model_once_for_all_its_shards(run_twice):
    """Two shards, run one after the other in this process: the tokenizer, T5 and the VAE
    are each loaded once, not once per shard or per step."""
    assert run_twice and MODEL_LOADS["first run"] == 3


@pytest.mark.slow
def test_a_rerun_with_nothing_new_to_encode_or_count_loads_no_model(run_twice):
    """Every latent and embedding is reused and every caption's token count is remembered
    (models/token_counts.py), so the forced rerun loads neither the VAE, T5 nor the
    tokenizer: 0.9-1.4 s of a one-clip change was loading the tokenizer to count captions
    counted before. Its counts are the first run's."""
    assert run_twice and MODEL_LOADS["unchanged rerun"] == 0
    for before, after in TOKEN_COUNTS.values():
        assert after == before and any(n is not None and n > 1 for n in after)


@pytest.mark.slow
def test_the_second_shard_is_decoded_while_the_first_one_encodes(run_twice):
    """The backfill decodes shard-00001's frames while shard-00000's run encodes; its run
    finds them all in the store, and the totals are those of decoding in the run."""
    settings, first, _, _ = run_twice
    assert first["shard-00000"].decoded_ahead == 0
    later = first["shard-00001"]
    assert later.decoded_ahead == later.accepted > 0
    # and frame_tensors says so in the UI: decoded ahead, not "computed 0, reused N"
    shown = FRAMES_METADATA["shard-00001"]
    assert (shown["decoded_ahead"], shown["computed"], shown["reused"]) == (later.accepted, 0, 0)
    assert FRAMES_METADATA["shard-00000"]["decoded_ahead"] == 0
    # per shard: frames + latents per accepted clip, one embedding per caption
    for summary in first.values():
        assert summary.computed == 3 * summary.accepted


@pytest.mark.slow
def test_undecodable_clip_is_rejected_with_reason_and_shard_succeeds(run_twice):
    settings, first, _, _ = run_twice
    shard = shard_for("clips/garbage.mp4", 2)
    summary = first[shard]
    assert summary.success and summary.rejected == 1
    assert summary.rejects_by_reason == {"unreadable": 1}
    rejects = pl.read_parquet(summary.rejects_path)
    assert rejects["clip_id"].to_list() == ["clips/garbage.mp4"]
    assert "clips/garbage.mp4" in rejects["message"][0]


@pytest.mark.slow
def test_frames_a_killed_backfill_decoded_ahead_do_not_count_in_the_next(tmp_path):
    """A backfill killed after its helper decoded shard-00000 ahead leaves that record: the
    next backfill did not decode those frames (they were reused), so it reports none decoded
    ahead and none computed."""
    root = write_test_dataset(tmp_path / "data", 6)
    settings = Settings.of(data_root=str(root), store=str(tmp_path / "store"), shards=2,
                           device="cpu", frames_retention="keep")
    with instance_for_test() as instance:
        materialize_shards(settings, instance)
        store = tmp_path / "store"
        stale = store / layout.decoded_ahead_path("tiny", "shard-00000")
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_text(json.dumps({"frames_keys": [
            p.name.split(".")[0] for p in (store / "cas" / "frames").rglob("*.safetensors")]}))
        again = materialize_shards(settings, instance, force=True)
    assert again["shard-00000"].decoded_ahead == 0
    assert again["shard-00000"].computed == 0
    assert not stale.exists()


@pytest.mark.slow
def test_unchanged_shard_rematerializes_with_everything_reused(run_twice):
    _, first, second, _ = run_twice
    for key, summary in second.items():
        assert summary.success
        assert summary.computed == 0
        assert summary.reused == first[key].computed + first[key].reused


@pytest.mark.slow
def test_finished_dataset_reads_back_without_models(run_twice):
    settings, first, _, _ = run_twice
    dataset = CogVideoXLatentDataset(f"{settings.store.url}/datasets/tiny", "tiny")
    assert len(dataset) == 6
    item = dataset[0]
    assert item["latents"].shape == (16, 3, 8, 12)
    assert item["prompt_embeds"].shape == (226, 32)
    assert torch.isfinite(item["latents"]).all()
    index = pl.read_parquet(first["shard-00000"].index_path)
    assert set(index.columns) >= {"clip_id", "caption", "bucket", "latent_key", "embedding_key"}


@pytest.mark.slow
def test_dagster_cli_validates_the_workspace(tmp_path):
    """What `dagster dev` loads: workspace.yaml -> cog_assets.definitions."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_frame_tensors_show_a_small_contact_sheet(run_twice):
    import base64
    import io

    from PIL import Image

    *_, sheet = run_twice
    prefix = "![contact sheet](data:image/jpeg;base64,"
    markdown = sheet["contact_sheet"]
    assert markdown.startswith(prefix) and markdown.endswith(")")
    jpeg = base64.b64decode(markdown[len(prefix):-1])
    assert len(jpeg) < 48_000
    assert Path(sheet["contact_sheet_path"]).read_bytes() == jpeg  # the same, as a file
    image = Image.open(io.BytesIO(jpeg)).convert("L")
    assert image.height >= THUMB_HEIGHT + LABEL_LINE and image.width >= THUMB_HEIGHT
    # each frame is labelled with its clip id: light text on the black band under it
    band = np.asarray(image)[THUMB_HEIGHT:THUMB_HEIGHT + LABEL_LINE]
    assert (band > 200).sum() > 20
