"""Progress lines: a line that rewrites itself on a terminal, plain lines in a CI log."""

from __future__ import annotations

import io

from cog_assets.runtime.progress import Progress, duration_text


def test_a_log_gets_plain_lines_and_one_at_the_end():
    log = io.StringIO()
    with Progress("shard-00001 vae_latents", 3, stream=log, every_s=0.0) as meter:
        for _ in range(3):
            meter.advance()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert lines[0].startswith("shard-00001 vae_latents: 1/3 clips, ")
    assert " clips/s, ETA " in lines[0]
    assert lines[-1].startswith("shard-00001 vae_latents: 3/3 clips in ")
    assert len(lines) == 3  # 1/3, 2/3 while running (every_s=0), then the end


def test_a_log_is_not_flooded_between_the_intervals():
    log = io.StringIO()
    with Progress("s frame_tensors", 100, stream=log, every_s=3600.0) as meter:
        for _ in range(100):
            meter.advance()
    assert log.getvalue().count("\n") == 1  # only the line at the end


def test_a_terminal_gets_one_line_rewritten_in_place():
    screen = io.StringIO()
    with Progress("s vae_latents", 2, stream=screen, tty=True) as meter:
        meter.advance()
        meter.advance()
    text = screen.getvalue()
    assert text.count("\r") == 3 and text.endswith("\x1b[K\n") and text.count("\n") == 1
    assert "s vae_latents: 1/2 clips" in text and "2/2 clips in " in text


def test_items_found_done_are_no_work_and_print_nothing():
    log = io.StringIO()
    with Progress("s frame_tensors", 4, stream=log, every_s=0.0) as meter:
        meter.advance(4, work=False)
    assert log.getvalue() == ""
    with Progress(None, 4, stream=log, every_s=0.0) as meter:  # no label: the caller is quiet
        meter.advance(4)
    assert log.getvalue() == ""


def test_durations_read_as_a_person_says_them():
    assert [duration_text(s) for s in (4.24, 185, 3720)] == ["4.2 s", "3 min 05 s",
                                                              "1 h 02 min"]
