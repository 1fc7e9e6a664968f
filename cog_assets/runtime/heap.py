"""Heap settings for the steps that hold large, short-lived tensors (the encoders).

Two settings, chosen by measuring speed (CPU seconds and page faults, which do not move with
the machine's load) and peak RSS of a bare `vae._encode` of one 49x240x368 clip (tiny VAE,
float32, one thread, 2-core EPYC shared with other work, issue 21):

| policy | CPU s per clip | minor faults per clip | peak RSS |
|---|---|---|---|
| glibc defaults (what a plain diffusers script gets) | 7.8-8.6 | 2.06-2.22 M | 1298-1331 MiB |
| fixed 4 MiB mmap threshold (issue 13's policy) | 9.0-9.7 | 2.70-2.73 M | 1168-1187 MiB |
| torch's huge pages + glibc defaults | 6.0-7.6 | 20-33 k | 1213-1256 MiB |
| torch's huge pages + fixed 4 MiB threshold (this) | 5.2-7.7 | 114-150 k | 1172-1178 MiB |

- Huge pages: glibc serves blocks above its mmap threshold with fresh mappings, and the
  kernel zeroes them one 4 KiB fault at a time: about 2 million faults per clip, a fifth of
  the encode's time (in `sys`). With THP_MEM_ALLOC_ENABLE=1 torch aligns and madvises its
  blocks of 2 MiB or more for transparent huge pages, so each fault maps 2 MiB. torch reads
  the variable once, at its first CPU allocation, so `cog_assets/__init__.py` sets it before
  anything imports torch (a value the user set is kept; nothing happens where THP is off).
- A fixed mmap threshold: glibc raises its threshold to the largest mmapped block freed (up
  to 32 MiB), after which the VAE's mid-sized activations stay in its heaps, whose holes are
  not handed back (a backfill peaked 250 MiB above a bare encode). Fixed at 4 MiB, every
  larger block is its own mapping, returned to the OS when freed: the lowest peak, and with
  huge pages it no longer costs time (1 MiB peaked 15 MiB lower for 40 % more faults).
No-ops where there is no glibc.
"""

from __future__ import annotations

import ctypes

from cog_assets.runtime.libc import libc_function

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 4 << 20


_MALLOPT = libc_function("mallopt", [ctypes.c_int, ctypes.c_int])
_MALLOC_TRIM = libc_function("malloc_trim", [ctypes.c_size_t])


def map_large_blocks() -> None:
    """Serve every block of 4 MiB or more with its own mapping, for the rest of the process
    (a fixed threshold: glibc no longer raises it)."""
    if _MALLOPT is not None:
        _MALLOPT(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Hand the pages of freed heap blocks back to the OS (after each batch): without it,
    over hundreds of batches RSS grew with the shard (+15% peak from 16 to 256 clips)
    instead of staying at one batch's working set."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
