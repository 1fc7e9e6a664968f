import subprocess
import sys

import pytest

from cog_assets.sources.sharding import shard_for, shard_index

# Ids and the shard each must land in. Published datasets and every partition Dagster has
# materialized are keyed by these: a change of hash function (or of how the digest is reduced
# to a shard) would silently move clips, so it has to show up here.
KNOWN = {
    ("clips/a.mp4", 16): "shard-00012",
    ("clips/b.mp4", 16): "shard-00012",
    ("videos/cat.mp4", 16): "shard-00010",
    ("v/0.mp4", 8): "shard-00006",
    ("videos/cat.mp4", 8): "shard-00002",
    ("clips/a.mp4", 1000): "shard-00372",
    ("clips/b.mp4", 1000): "shard-00212",
    ("v/1.mp4", 1000): "shard-00822",
}


def test_known_ids_land_in_their_known_shards():
    assert {key: shard_for(*key) for key in KNOWN} == KNOWN


def test_shard_is_stable_across_processes():
    """hash() is salted per process; the shard must not be."""
    code = "from cog_assets.sources.sharding import shard_for; print(shard_for('clips/a.mp4', 16))"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip() for _ in range(2)}
    assert outputs == {shard_for("clips/a.mp4", 16)} == {KNOWN[("clips/a.mp4", 16)]}


def test_shard_keys_are_zero_padded_and_in_range():
    keys = {shard_for(f"v/{i}.mp4", 8) for i in range(200)}
    assert keys == {f"shard-{i:05d}" for i in range(8)}


def test_adding_clips_never_moves_old_ones():
    """A clip's shard depends only on its id and the shard count, not on which other clips
    exist or in what order they are listed: new uploads leave old partitions untouched."""
    old = [f"v/{i}.mp4" for i in range(50)]
    new = [f"w/{i}.mp4" for i in range(50)]
    before = {clip: shard_for(clip, 8) for clip in old}
    assert len(set(before.values())) == 8  # the old clips spread over every shard
    listing = new[:25] + old[::-1] + new[25:]  # new ids before, between and after the old ones
    after = {clip: shard_for(clip, 8) for clip in listing}
    assert {clip: after[clip] for clip in old} == before


def test_shard_count_below_one_is_refused():
    with pytest.raises(ValueError):
        shard_index("clips/a.mp4", 0)
