"""What checking an artefact's digest costs against reading it (issue 11: "hashing costs far
less than the read").

For the artefact sizes of the real profiles (moments of 49x480x720 in fp32 and bf16, frames of
49x480x720 uint8, a 226x4096 bf16 embedding), in one run on one store on local disk:

- read: `ContentStore.read_bytes` + `safetensors.torch.load` (what a read cost before digests);
- verified read: `ContentStore.get_tensors` (read + blake3 of the data + load);
- header check: `ContentStore.check_artifact(full=False)` (what reuse of frames costs) against
  `ContentStore.has` (the existence check it replaced).

Two columns of reads: `warm` (the file is in the page cache: a read is a memory copy, the
least favourable case for hashing) and `cold` (its pages evicted first with
posix_fadvise(DONTNEED): a read from the disk, as a run meets an artefact written long ago).
S3 reads cost more still.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import load as load_safetensors  # noqa: E402

from cog_assets.core.keys import digest_of  # noqa: E402
from cog_assets.store.content_store import ContentStore  # noqa: E402

SHAPES = {
    "moments 49x480x720 fp32": ((32, 13, 60, 90), torch.float32),
    "moments 49x480x720 bf16": ((32, 13, 60, 90), torch.bfloat16),
    "frames 49x480x720 uint8": ((49, 480, 720, 3), torch.uint8),
    "embedding 226x4096 bf16": ((226, 4096), torch.bfloat16),
}


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def evict(path: str) -> None:
    """Drop the file's pages from the page cache, so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cold(path: str, fn):
    def run():
        evict(path)
        return fn()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = ContentStore(folder)
        print(f"{'artefact':26} {'MiB':>5} | {'hash':>6} | warm: {'read':>6} {'checked':>8} "
              f"{'hash/read':>9} | cold: {'read':>6} {'checked':>8} {'hash/read':>9} | "
              f"{'has':>6} {'header':>6}   (ms, medians of {args.repeats})")
        for n, (name, (shape, dtype)) in enumerate(SHAPES.items()):
            tensor = (torch.randint(0, 255, shape, dtype=torch.uint8) if dtype == torch.uint8
                      else torch.randn(shape).to(dtype))
            key = f"{n:02d}" + "0" * 62
            path = store.put_tensors("bench", key, {"x": tensor})
            size = Path(path).stat().st_size / 2**20
            data = Path(path).read_bytes()
            hashing = timed(lambda: digest_of(data), args.repeats)

            def read():
                return load_safetensors(store.read_bytes(path))

            def checked():
                return store.get_tensors("bench", key)

            warm = [timed(read, args.repeats), timed(checked, args.repeats)]
            cool = [timed(cold(path, read), args.repeats), timed(cold(path, checked),
                                                                 args.repeats)]
            exists = timed(lambda: store.has("bench", key), args.repeats)
            header = timed(lambda: store.check_artifact("bench", key, full=False), args.repeats)
            print(f"{name:26} {size:5.1f} | {hashing * 1e3:6.2f} | warm: {warm[0] * 1e3:6.2f} "
                  f"{warm[1] * 1e3:8.2f} {hashing / warm[0]:9.2f} | cold: {cool[0] * 1e3:6.2f} "
                  f"{cool[1] * 1e3:8.2f} {hashing / cool[0]:9.2f} | {exists * 1e3:6.3f} "
                  f"{header * 1e3:6.3f}")


if __name__ == "__main__":
    main()
