"""File stems and prompt lines that survive the trainers' plain-text manifests.

Both trainers find a clip's tensors through the *stem* of the name listed in `videos.txt`
(cogvideox-factory: `path.name.split(".")[0]`; CogVideo: `Path.stem`), and read `prompts.txt`
with `line.strip()` over `readlines()`, dropping empty lines. So a stem must hold no dot and no
separator and be unique (also case-insensitively, for macOS volumes), and a prompt must be one
non-empty, already-stripped line or the two files fall out of step.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_BASE_LENGTH = 80


def _digest(clip_id: str, length: int) -> str:
    return hashlib.sha256(clip_id.encode("utf-8")).hexdigest()[:length]


_FRAGMENT = re.compile(r"#t=(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)$")


def _seconds(text: str) -> str:
    """`10.320` -> `10s320`: a time in a stem, whole (no dot, which a stem cannot hold)."""
    whole, _, fraction = text.partition(".")
    return f"{whole}s{fraction}" if fraction else f"{whole}s"


def _base(clip_id: str) -> str:
    """`clips/sub/a.mp4` -> `clips_sub_a`: the extension dropped, anything unsafe made `_`;
    a segment `a.mp4#t=10.320,17.000` -> `a_t10s320-17s000` (both times whole)."""
    times = _FRAGMENT.search(clip_id)
    path = clip_id[:times.start()] if times else clip_id
    head, _, last = path.rpartition("/")
    if "." in last.lstrip("."):
        last = last[: last.rfind(".")]
    base = _UNSAFE.sub("_", f"{head}/{last}" if head else last).strip("_")
    if times:
        base = f"{base}_t{_seconds(times.group(1))}-{_seconds(times.group(2))}"
    return base


def clip_stems(clip_ids: Iterable[str]) -> dict[str, str]:
    """A unique, dot-free stem per clip id; ids whose readable stems clash get a hash suffix.

    Every member of a clash is suffixed (not just the later ones), so a clip's stem does not
    depend on the order the clips were listed in.
    """
    bases = {clip_id: _base(clip_id) for clip_id in dict.fromkeys(clip_ids)}
    clashes = Counter(base.lower() for base in bases.values())
    stems: dict[str, str] = {}
    for clip_id, base in bases.items():
        if not base:
            stems[clip_id] = f"clip-{_digest(clip_id, 8)}"
        elif len(base) > MAX_BASE_LENGTH or clashes[base.lower()] > 1:
            stems[clip_id] = f"{base[:MAX_BASE_LENGTH]}-{_digest(clip_id, 8)}"
        else:
            stems[clip_id] = base
    taken = Counter(stem.lower() for stem in stems.values())
    for clip_id, stem in stems.items():  # a suffixed stem can equal another clip's plain one
        if taken[stem.lower()] > 1:
            stems[clip_id] = f"{bases[clip_id][:MAX_BASE_LENGTH]}-{_digest(clip_id, 64)}"
    if len({stem.lower() for stem in stems.values()}) != len(stems):
        raise ValueError("could not derive unique file stems for the clip ids")
    return stems


def one_line(caption: str) -> str:
    """The caption as the single stripped line a `readlines()`/`strip()` reader gets back."""
    return " ".join(part.strip() for part in caption.splitlines() if part.strip())
