"""A small finished dataset built directly with safetensors, and tests of how exports read it.

`build_dataset` is shared by the other `test_export_*` modules: two shards, clips of two buckets
(9x64x96 and 17x64x64) with the tiny profile's 226x32 embeddings, clip ids with `/`, ids whose
readable stems clash, a shared caption and captions with line breaks.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from cog_assets.exports.atomic import atomic_file, write_bytes
from cog_assets.exports.naming import clip_stems, one_line
from cog_assets.exports.source import read_clips
from cog_assets.profiles import get_profile

TINY = get_profile("tiny")

# shard, clip id, caption, F, H, W
CLIPS = [
    ("shard-00000", "clips/a.mp4", "a red ball rolls", 9, 64, 96),
    ("shard-00000", "clips/x_y.mp4", "  two lines\nof caption  ", 17, 64, 64),
    ("shard-00001", "clips/x/y.mp4", "a red ball rolls", 9, 64, 96),
    ("shard-00001", "clips/x.y.mp4", "a blue cube\r\nspins\n", 17, 64, 64),
    ("shard-00001", "clips/sub dir/B.v2.mov", "a green cone", 9, 64, 96),
]
# what the trainers must read back for each caption above
FLAT = {"a red ball rolls": "a red ball rolls", "  two lines\nof caption  ": "two lines of caption",
        "a blue cube\r\nspins\n": "a blue cube spins", "a green cone": "a green cone"}


@dataclass
class Expected:
    """The tensors a clip was built with, to compare exports against."""

    caption: str
    bucket: tuple[int, int, int]
    moments: torch.Tensor
    embedding: torch.Tensor
    image_latent: torch.Tensor | None


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_dataset(root: Path, clips=CLIPS, *, image_latents: bool = False,
                  missing_image: str | None = None) -> dict[str, Expected]:
    """Write `root/shard-*/` (index, latents, prompt embeds, rejects) and return what is in it."""
    gen = torch.Generator().manual_seed(1234)
    expected: dict[str, Expected] = {}
    embeddings: dict[str, torch.Tensor] = {}
    shards: dict[str, list] = {}
    for shard, clip_id, caption, f, h, w in clips:
        shards.setdefault(shard, []).append((clip_id, caption, f, h, w))
    for shard, members in shards.items():
        folder = root / shard
        folder.mkdir(parents=True)
        latents, embeds, images, rows = {}, {}, {}, []
        for clip_id, caption, f, h, w in members:
            c, lf, lh, lw = TINY.latent_shape(f, h, w)
            mean = torch.randn((c // 2, lf, lh, lw), generator=gen)
            logvar = torch.rand((c // 2, lf, lh, lw), generator=gen) * 2 - 3
            latents[clip_id] = torch.cat([mean, logvar])
            key = sha256(caption)
            if key not in embeddings:
                embeddings[key] = torch.randn(TINY.text_shape(), generator=gen)
            embeds[key] = embeddings[key]
            image = None
            if image_latents and clip_id != missing_image:
                image = torch.randn((c, 1, lh, lw), generator=gen)
                images[clip_id] = image
            expected[clip_id] = Expected(caption, (f, h, w), latents[clip_id], embeddings[key],
                                         image)
            rows.append({"clip_id": clip_id, "caption": caption, "caption_sha256": key,
                         "content_hash": sha256(clip_id), "bucket": f"{f}x{h}x{w}",
                         "num_frames": f, "height": h, "width": w, "latent_key": "k",
                         "embedding_key": "k", "has_image_latent": image is not None})
        save_file(latents, folder / "latents.safetensors")
        save_file(embeds, folder / "prompt_embeds.safetensors")
        if images:
            save_file(images, folder / "image_latents.safetensors")
        index = pl.DataFrame(rows)
        if not image_latents:
            index = index.drop("has_image_latent")  # an older shard without the column
        index.write_parquet(folder / "index.parquet")
        pl.DataFrame({"clip_id": [], "reason": []}).write_parquet(folder / "rejects.parquet")
    return expected


def leftover_temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_read_clips_lists_every_clip_of_every_shard(tmp_path):
    expected = build_dataset(tmp_path / "ds")
    clips = read_clips(tmp_path / "ds")
    assert sorted(c.clip_id for c in clips) == sorted(expected)
    assert {c.shard_dir.name for c in clips} == {"shard-00000", "shard-00001"}
    assert all(c.has_image_latent is None for c in clips)


def test_a_clip_id_in_two_shards_is_refused(tmp_path):
    clips = [("shard-00000", "clips/a.mp4", "one", 9, 64, 96),
             ("shard-00001", "clips/a.mp4", "two", 9, 64, 96)]
    build_dataset(tmp_path / "ds", clips)
    with pytest.raises(ValueError, match="clips/a.mp4"):
        read_clips(tmp_path / "ds")


def test_stems_of_clashing_ids_are_distinct_and_order_free():
    ids = ["clips/x_y.mp4", "clips/x/y.mp4", "clips/x.y.mp4", "clips/a.mp4", "CLIPS/A.mp4"]
    stems = clip_stems(ids)
    assert stems == clip_stems(reversed(ids))
    assert len({s.lower() for s in stems.values()}) == len(ids)
    assert all(stems[i].startswith("clips_x_y-") for i in ids[:3])
    assert all(len(stems[i]) == len("clips_x_y-") + 8 for i in ids[:3])  # a short suffix
    assert clip_stems(["clips/a.mp4", "clips/b.mp4"]) == {"clips/a.mp4": "clips_a",
                                                          "clips/b.mp4": "clips_b"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=30), min_size=1, max_size=8))
def test_stems_survive_both_trainers_stem_rules(ids):
    stems = clip_stems(ids)
    assert len({s.lower() for s in stems.values()}) == len(set(ids))
    for stem in stems.values():
        name = f"videos/{stem}.mp4"
        assert stem and Path(name).name.split(".")[0] == stem == Path(name).stem
        assert Path(name).parent == Path("videos")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_one_line_reads_back_as_one_stripped_line(caption):
    line = one_line(caption)
    text = io.TextIOWrapper(io.BytesIO(f"{line}\n".encode()), encoding="utf-8")
    read = [x.strip() for x in text.readlines() if len(x.strip()) > 0]
    assert read == ([line] if line else [])
    assert line.split() == caption.split()


def test_an_interrupted_write_leaves_neither_the_file_nor_a_temp(tmp_path):
    target = tmp_path / "video_latents" / "a.pt"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write(b"half of a tensor")
            raise RuntimeError("killed")
    assert not target.exists() and not leftover_temp_files(tmp_path)
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write(b"new but partial")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and not leftover_temp_files(tmp_path)
