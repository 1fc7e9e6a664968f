"""The caption checks on real captions (the corpus's, from CogVideo, Open-Sora and VBench) and
on the ways a model's output goes wrong: another language, mixed scripts, loops."""

from __future__ import annotations

from pathlib import Path

import pytest

from cog_assets.captions.checks import degeneracy, language_of, strip_boilerplate

CHINESE = "一只猫坐在窗台上，阳光照在它身上，它慢慢地闭上了眼睛，尾巴轻轻地摆动。"
MIXED = "A cat 坐在窗台上 in the warm afternoon sun, 它慢慢地闭上了眼睛 while the curtains move."
GERMAN = "Ein Mann fährt mit dem Fahrrad durch die belebte Stadt, während die Sonne untergeht."


@pytest.fixture(scope="module")
def real_captions(shared_media: Path) -> list[str]:
    """Real English captions: CogVideo's test prompts, Open-Sora's PLLaVA captions, VBench's."""
    return [line for path in sorted((shared_media / "captions").glob("*.txt"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_real_english_captions_pass_every_check(real_captions):
    captions = real_captions
    assert len(captions) > 900
    assert [c for c in captions if not language_of(c, "en").ok] == []
    assert [c for c in captions if degeneracy(c) is not None] == []


@pytest.mark.parametrize("text", [CHINESE, MIXED, GERMAN])
def test_captions_in_another_language_or_mixing_scripts_are_not_english(text):
    verdict = language_of(text, "en")
    assert not verdict.ok and verdict.reason


def test_a_wanted_language_other_than_english_and_any(real_captions):
    assert language_of(GERMAN, "de").ok
    assert not language_of(real_captions[0], "de").ok
    assert language_of(CHINESE, "any").ok


def test_short_english_captions_are_not_called_foreign():
    # langid is unsure on a few words: unsure is never a reject
    for text in ("a cat", "a red ball", "Big Buck Bunny stretches in a meadow"):
        assert language_of(text, "en").ok, text


def test_repetition_loops_and_a_handful_of_words_are_degenerate(real_captions):
    real = real_captions[5]
    assert degeneracy(real) is None
    assert "repeats" in degeneracy(real[:80] + " " + "The waves crash on the shore. " * 12)
    assert "repeats" in degeneracy("的" * 300)
    assert "repeats" in degeneracy(" ".join(["a dog runs"] * 30))
    assert "words" in degeneracy("A red ball.")
    assert degeneracy(CHINESE) is None  # unspaced scripts are not counted in words


@pytest.mark.parametrize("written, kept", [
    ("The video shows a man riding a bike through a park.",
     "A man riding a bike through a park."),
    ("Sure! Here is a detailed description of the video: The video depicts a cat asleep.",
     "A cat asleep."),
    ("In this clip, a dog runs along the beach.", "A dog runs along the beach."),
    ("The footage captures how a wave breaks on rocks.", "A wave breaks on rocks."),
    ("A video of a dog on a sofa.", "A video of a dog on a sofa."),  # names the scene: kept
])
def test_boilerplate_openings_are_stripped(written, kept):
    assert strip_boilerplate(written) == kept
