"""The export assets through Dagster, from shards the pipeline itself produced."""

import json

import polars as pl
import pytest
import torch
from dagster import instance_for_test
from safetensors.torch import load_file

from cog_assets.core.config import Settings
from cog_assets.defs.runs import materialize_shards, run_exports
from cog_assets.exports.naming import clip_stems
from cog_assets.media.synthetic import write_test_dataset

pytestmark = pytest.mark.slow


def test_exports_from_a_materialized_dataset(tmp_path):
    root = write_test_dataset(tmp_path / "data", 3, broken=False)
    settings = Settings.of(data_root=str(root), store=str(tmp_path / "store"), shards=2,
                           device="cpu")
    with instance_for_test() as instance:
        summaries = materialize_shards(settings, instance)
        result = run_exports(settings, instance)
    assert result
    factory = tmp_path / "store/exports/tiny/cogvideox-factory"
    videos = (factory / "videos.txt").read_text().splitlines()
    prompts = (factory / "prompts.txt").read_text().splitlines()
    assert len(videos) == len(prompts) == 3
    index = pl.concat([pl.read_parquet(s.index_path) for s in summaries.values()])
    caption_of = {stem: caption for stem, caption in zip(
        [clip_stems(index["clip_id"])[c] for c in index["clip_id"]], index["caption"])}
    for video, prompt in zip(videos, prompts):
        stem = video.split("/")[-1].split(".")[0]
        latents = torch.load(factory / "video_latents" / f"{stem}.pt", weights_only=True)
        embeds = torch.load(factory / "prompt_embeds" / f"{stem}.pt", weights_only=True)
        assert latents.shape == (32, 3, 8, 12) and embeds.shape == (226, 32)
        assert prompt == caption_of[stem]  # its own clip's caption, line by line
    args = (factory / "trainer_args.txt").read_text()
    assert "--load_tensors" in args and "--mixed_precision no" in args
    finetune = tmp_path / "store/exports/tiny/cogvideo-finetune/cache"
    embedded = list((finetune / "prompt_embeddings").glob("*.safetensors"))
    assert len(embedded) == 3
    assert load_file(str(embedded[0]))["prompt_embedding"].shape == (226, 32)
    assert len(list((finetune / "video_latent").rglob("*.safetensors"))) == 3
    # the clip files, linked by both video exports (the same files: cut once)
    entries = json.loads((tmp_path / "store/exports/tiny/videox-fun/metadata.json").read_text())
    assert len(entries) == 3 and {e["text"] for e in entries} == set(index["caption"])
    videos = tmp_path / "store/exports/tiny/cogvideo-finetune/videos"
    assert {p.stat().st_ino for p in videos.iterdir()} == {
        (tmp_path / "store/exports/tiny/videox-fun" / e["file_path"]).stat().st_ino
        for e in entries}
    assert len(list((tmp_path / "store/cas/clip_file").rglob("*.mp4"))) == 3
