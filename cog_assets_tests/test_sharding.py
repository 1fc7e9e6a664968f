import subprocess
import sys

from cog_assets.sharding import shard_for, shard_index


def test_shard_is_stable_across_processes():
    """hash() is salted per process; the shard must not be."""
    code = "from cog_assets.sharding import shard_for; print(shard_for('clips/a.mp4', 16))"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip() for _ in range(2)}
    assert outputs == {shard_for("clips/a.mp4", 16)}


def test_shard_keys_are_zero_padded_and_in_range():
    keys = {shard_for(f"v/{i}.mp4", 8) for i in range(200)}
    assert keys == {f"shard-{i:05d}" for i in range(8)}


def test_adding_clips_never_moves_old_ones():
    before = {f"v/{i}.mp4": shard_index(f"v/{i}.mp4", 8) for i in range(50)}
    for i in range(50, 100):
        shard_index(f"v/{i}.mp4", 8)
    assert before == {c: shard_index(c, 8) for c in before}
