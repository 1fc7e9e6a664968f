"""Fuzzing probe_video + read_clip_frames with truncated and bit-flipped small videos, and
with container-level inputs: playlists and lists naming other files, and damaged headers.

Every input is decoded in a separate worker process (fixtures/fuzz_worker.py), so a decoder
segfault or hang is a failed example, not a dead pytest. Every input must, within the
timeout, either give frames of the asked shape and dtype or raise MediaError with a known
reason. Truncated copies (no flipped bits) must moreover never give made-up frames: what they
return is what the intact file shows at those times. A playlist, concat list or manifest
(whatever it names, however it is named) must never give frames: frames would be another
file's, read through it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cog_assets.core.reasons import RejectReason
from cog_assets_tests.fixtures.fuzz_worker import DecodeWorker
from cog_assets_tests.fixtures.media import write_clip, write_webm_clip

# Every reason the design (§9) names for a file that cannot be used at decode time.
KNOWN_REASONS = frozenset({"empty_file", "unreadable", "no_video_stream", "too_short",
                           "decode_error", "too_small", "truncated", "too_large", "too_long",
                           "unsupported_container", "unknown_rotation"})
REQUEST = {"num_frames": 9, "fps": 8, "height": 64, "width": 96}  # the tiny window
SOURCE_FPS = 24
EXACT = [i * SOURCE_FPS // REQUEST["fps"] for i in range(REQUEST["num_frames"])]
TIMEOUT_S = 30.0
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


class Bases(dict):
    """name -> bytes of a small intact clip, plus the folder examples are written to."""

    def __init__(self, tmp, files):
        super().__init__({name: path.read_bytes() for name, path in files.items()})
        self.tmp = tmp

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"Bases({', '.join(f'{k}: {len(v)} bytes' for k, v in self.items())})"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    return Bases(tmp, {
        "mp4": write_clip(tmp / "base.mp4", seconds=1.5),  # index (moov) at the end
        "mp4_faststart": write_clip(tmp / "base_faststart.mp4", seconds=1.5, faststart=True),
        "webm_vp8": write_webm_clip(tmp / "base_vp8.webm", seconds=1.5, codec="libvpx"),
    })


@pytest.fixture(scope="module")
def worker():
    w = DecodeWorker(timeout_s=TIMEOUT_S)
    yield w
    w.close()


def _decode(bases, worker, name: str, data: bytes):
    suffix = ".webm" if name.startswith("webm") else ".mp4"
    path = bases.tmp / f"example{suffix}"
    path.write_bytes(data)
    return worker.ask({"path": str(path), **REQUEST})


def _check_contract(answer, what: str) -> None:
    if answer.kind == "frames":
        assert answer.data["shape"] == [REQUEST["num_frames"], REQUEST["height"],
                                        REQUEST["width"], 3], (what, answer.describe())
        assert answer.data["dtype"] == "uint8", (what, answer.describe())
    elif answer.kind == "media_error":
        reason = answer.data["reason"]
        assert reason in KNOWN_REASONS, (what, answer.describe())
        assert reason in RejectReason.words(), f"{reason!r} is raised but not a RejectReason"
        assert answer.data["message"], (what, answer.describe())
    else:  # exception, crashed, timeout
        pytest.fail(f"{what}: {answer.describe()}")


@pytest.mark.slow
def test_the_harness_reports_a_crashing_or_hanging_decoder_as_a_failure():
    worker = DecodeWorker(timeout_s=2.0)
    try:
        crashed = worker.ask({"selftest": "segfault"})
        assert crashed.kind == "crashed" and crashed.data["returncode"] == -11, crashed
        hung = worker.ask({"selftest": "hang"})
        assert hung.kind == "timeout", hung
        assert worker.restarts == 2
    finally:
        worker.close()


def test_the_intact_bases_decode_exactly(bases, worker):
    for name in ("mp4", "mp4_faststart", "webm_vp8"):
        answer = _decode(bases, worker, name, bases[name])
        assert answer.kind == "frames" and answer.data["indices"] == EXACT, answer.describe()


BASE_NAMES = st.sampled_from(["mp4", "mp4_faststart", "webm_vp8"])
# Where to cut: anywhere, with extra weight on the tail, where a plain mp4 keeps its index.
KEEP = st.one_of(st.floats(0.0, 1.0, exclude_max=True), st.floats(0.8, 1.0, exclude_max=True))
FLIPS = st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 7)),
                 min_size=1, max_size=24)


@FUZZ
@given(name=BASE_NAMES, keep=KEEP, flips=FLIPS,
       truncate=st.booleans())
def test_mutated_files_give_frames_or_a_known_media_error(bases, worker, name, keep, flips,
                                                          truncate):
    data = bytearray(bases[name])
    for where, bit in flips:
        data[int(where * len(data))] ^= 1 << bit
    if truncate:
        data = data[: int(keep * len(data))]
    what = f"{name}, {len(flips)} flipped bits, {'cut to %d bytes' % len(data) if truncate else 'full length'}"
    _check_contract(_decode(bases, worker, name, bytes(data)), what)


@FUZZ
@given(name=BASE_NAMES, keep=KEEP)
def test_truncated_files_give_true_frames_or_a_known_media_error(bases, worker, name, keep):
    data = bases[name][: int(keep * len(bases[name]))]
    what = f"{name} cut to {len(data)} of {len(bases[name])} bytes"
    answer = _decode(bases, worker, name, data)
    _check_contract(answer, what)
    if answer.kind == "frames":
        # The window needs source frames 0..24 (1 s); a cut file that lacks some must be
        # refused, not padded by repeating the last frame it has. One source frame of
        # slack for the last sample (durations are rounded).
        got = answer.data["indices"]
        assert all(abs(g - e) <= 1 for g, e in zip(got, EXACT)), (
            f"{what}: accepted with source frames {got}, the intact file shows {EXACT}")


# -- container-level inputs --------------------------------------------------------------------

@pytest.fixture(scope="module")
def playground(bases):
    """A data root for playlists, beside an intact clip and a FIFO outside it."""
    root = bases.tmp / "root"
    root.mkdir(exist_ok=True)
    outside = bases.tmp / "outside.mp4"
    outside.write_bytes(bases["mp4_faststart"])
    (root / "inside.mp4").write_bytes(bases["mp4"])
    fifo = bases.tmp / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)  # no writer: whoever opens it for reading waits forever
    if not (root / "dirlink").exists():
        (root / "dirlink").symlink_to(bases.tmp, target_is_directory=True)
    return root


def _target(token: str, root, list_name: str) -> str:
    """What a list names: outside, inside, itself, a FIFO, a device, URLs, protocols."""
    tmp = root.parent
    return {"SELF": list_name, "OUTSIDE": str(tmp / "outside.mp4"),
            "FIFO": str(tmp / "fifo"), "FILE_URL": f"file:{tmp / 'outside.mp4'}",
            "CONCAT_PROTOCOL": f"concat:{tmp}/outside.mp4",
            "SUBFILE": f"subfile,,start,0,end,0,,:{tmp}/outside.mp4"}.get(token, token)


TARGETS = st.sampled_from([
    "OUTSIDE", "../outside.mp4", "dirlink/outside.mp4", "inside.mp4", "SELF", "FIFO",
    "dirlink/fifo", "/dev/zero", "/dev/urandom", "FILE_URL", "http://127.0.0.1:9/x.mp4",
    "CONCAT_PROTOCOL", "SUBFILE", "data:video/mp4;base64,AAAA", "missing.mp4"])


LISTS = {
    "ffconcat": lambda names: "ffconcat version 1.0\n" + "".join(f"file {n}\n" for n in names),
    "hls": lambda names: "#EXTM3U\n#EXT-X-TARGETDURATION:2\n" + "".join(
        f"#EXTINF:1.5,\n{n}\n" for n in names) + "#EXT-X-ENDLIST\n",
    "hls_master": lambda names: "#EXTM3U\n" + "".join(
        f"#EXT-X-STREAM-INF:BANDWIDTH=1000\n{n}\n" for n in names),
    "dash": lambda names: '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" type="static" '
        'mediaPresentationDuration="PT1.5S"><Period><AdaptationSet mimeType="video/mp4">'
        + "".join(f'<Representation id="{i}" bandwidth="1"><BaseURL>{n}</BaseURL>'
                  '</Representation>' for i, n in enumerate(names))
        + "</AdaptationSet></Period></MPD>\n",
    "sdp": lambda names: "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\n",
    "plain": lambda names: "".join(f"{n}\n" for n in names),
}
SUFFIXES = st.sampled_from([".mp4", ".m3u8", ".m3u", ".mpd", ".txt", ".ts", ".ffconcat",
                            ".sdp", ".mkv", ""])


@FUZZ
@given(kind=st.sampled_from(sorted(LISTS)), suffix=SUFFIXES,
       names=st.lists(TARGETS, min_size=1, max_size=3), junk=st.binary(max_size=64),
       junk_first=st.booleans())
@example(kind="ffconcat", suffix=".mp4", names=["dirlink/outside.mp4"], junk=b"",
         junk_first=False)  # what FFmpeg followed before the allow-list: the outside frames
@example(kind="ffconcat", suffix=".mp4", names=["dirlink/fifo"], junk=b"",
         junk_first=False)  # what hung the probe forever
@example(kind="hls", suffix=".m3u8", names=["OUTSIDE"], junk=b"", junk_first=False)
@example(kind="hls", suffix=".m3u8", names=["../outside.mp4"], junk=b"", junk_first=False)
@example(kind="ffconcat", suffix=".mp4", names=["SELF"], junk=b"", junk_first=False)
def test_lists_and_playlists_never_give_another_files_frames(bases, worker, playground, kind,
                                                             suffix, names, junk, junk_first):
    path = playground / f"list{suffix}"
    text = LISTS[kind]([_target(n, playground, path.name) for n in names]).encode()
    path.write_bytes(junk + text if junk_first else text + junk)
    what = f"{kind} list named {path.name} naming {names}"
    answer = worker.ask({"path": str(path), "root": str(playground), **REQUEST})
    assert answer.kind == "media_error", (what, answer.describe())
    _check_contract(answer, what)


HEADER_BYTES = 2048  # ftyp+moov of a faststart mp4, EBML header + segment info of a webm


@FUZZ
@given(name=BASE_NAMES, flips=FLIPS, cut=st.one_of(st.none(), st.integers(1, HEADER_BYTES)))
def test_damaged_container_headers_give_frames_or_a_known_media_error(bases, worker, name,
                                                                      flips, cut):
    """Bits flipped where the container keeps its index (the head, or the tail where a plain
    mp4 has its moov), or the file cut inside its header."""
    data = bytearray(bases[name])
    tail = name == "mp4"  # moov at the end
    region = (len(data) - HEADER_BYTES, len(data)) if tail else (0, HEADER_BYTES)
    for where, bit in flips:
        data[region[0] + int(where * (region[1] - region[0]))] ^= 1 << bit
    if cut is not None:
        data = data[:cut]
    length = f"cut to {cut} bytes" if cut else "whole"
    what = f"{name}, {len(flips)} header bits flipped, {length}"
    _check_contract(_decode(bases, worker, name, bytes(data)), what)
