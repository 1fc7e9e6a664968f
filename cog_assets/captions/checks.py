"""Cheap checks of a caption: its language, a boilerplate opening, a degenerate output.

Written captions (a VLM's, a polishing LLM's) are cleaned and judged; captions a person wrote
are only judged for their language. Each check is a pure function of the text, so a stored
caption is judged again on every run at no cost, and changing a check never asks a model
again (CAPTIONS_VERSION in core/keys.py changes the caption step's code version).

The language is identified by py3langid (langid.py's model: offline, no download), which is
only trusted when it is confident; for English a second, script-based rule catches captions
that mix in words of another script (T5's English vocabulary reads those as unknown tokens).
"""

from __future__ import annotations

import re
import threading
import unicodedata
import zlib
from dataclasses import dataclass
from functools import cache

MIN_WORDS = 6  # fewer words than this is no description of a video
MIN_DISTINCT_TRIGRAMS = 0.5  # share of distinct word trigrams under which a text loops
MAX_COMPRESSION = 3.2  # zlib ratio over which a long text repeats itself (characters too)
LANGID_CONFIDENCE = 0.9  # another language is believed only this sure
MAX_FOREIGN_LETTERS = 0.1  # for English: share of letters outside the Latin script allowed

# "The video shows a man ..." -> "A man ...": openings that describe the medium, not the scene
# (what captioning models write unless told not to, and what a text-to-video prompt lacks).
_SUBJECT = r"(?:the|this|in the|in this)\s+(?:short\s+|brief\s+)?(?:video|clip|footage|scene|sequence|frames?|images?|animation)"
_VERB = (r"(?:shows|showcases|depicts|features|captures|presents|displays|portrays|"
         r"begins with|opens with|starts with|is of|contains|highlights)")
BOILERPLATE = (
    re.compile(r"^\s*(?:sure|certainly|of course)[,!.]?\s*(?:here(?:'s| is) [^:\n]{0,80}:)?\s*",
               re.IGNORECASE),
    re.compile(r"^\s*here(?:'s| is) (?:a |the )?(?:detailed )?(?:description|caption)[^:\n]{0,60}:\s*",
               re.IGNORECASE),
    re.compile(rf"^\s*{_SUBJECT}\s+(?:appears to\s+)?{_VERB}\s*(?:that\s+|how\s+)?",
               re.IGNORECASE),
    re.compile(rf"^\s*{_SUBJECT}\s*,\s*", re.IGNORECASE),
)


def strip_boilerplate(text: str) -> str:
    """The caption without the openings that describe the medium ("The video shows", "In this
    clip,", "Sure! Here is a description:"), its first letter capitalised; unchanged if
    nothing would be left."""
    cleaned = text.strip().strip('"').strip()
    for _ in range(3):  # "Sure! Here is a description: The video shows ..."
        before = cleaned
        for pattern in BOILERPLATE:
            cleaned = pattern.sub("", cleaned, count=1)
        if cleaned == before:
            break
    cleaned = cleaned.strip()
    if not cleaned:
        return text.strip()
    return cleaned[0].upper() + cleaned[1:]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def degeneracy(text: str) -> str | None:
    """Why a written caption is degenerate (a repetition loop, a handful of words), or None."""
    words = _words(text)
    if len(words) < MIN_WORDS and not _mostly_unspaced(text):
        return f"only {len(words)} words"
    trigrams = list(zip(words, words[1:], words[2:]))
    if len(trigrams) >= 10:
        distinct = len(set(trigrams)) / len(trigrams)
        if distinct < MIN_DISTINCT_TRIGRAMS:
            return f"it repeats itself ({distinct:.0%} of its word trigrams are distinct)"
    data = text.encode("utf-8")
    if len(data) >= 120:
        ratio = len(data) / len(zlib.compress(data, 9))
        if ratio > MAX_COMPRESSION:
            return f"it repeats itself (compresses {ratio:.1f}x)"
    return None


def _mostly_unspaced(text: str) -> bool:
    """Scripts written without spaces (Chinese, Japanese): words cannot be counted."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(_script(c) in ("CJK", "HIRAGANA", "KATAKANA") for c in letters) \
        > len(letters) / 2


def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    return name.split(" ")[0] if name else ""


@dataclass(frozen=True)
class LanguageVerdict:
    language: str  # what was found ("und": undetermined)
    confidence: float
    reason: str | None  # why it is not the wanted language, None if it may be

    @property
    def ok(self) -> bool:
        return self.reason is None


_LOCK = threading.Lock()


@cache
def _identifier():
    """langid's model, loaded once per process (about a second: it is decompressed)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def load_in_background() -> threading.Thread:
    """Load langid's model in a thread, so a step pays for it while it waits on a model."""
    thread = threading.Thread(target=_identifier, name="cog-assets-langid", daemon=True)
    thread.start()
    return thread


def language_of(text: str, wanted: str) -> LanguageVerdict:
    """Whether `text` is in `wanted` (ISO 639-1; "any" accepts everything). A caption is
    refused only when another language is certain: langid at least LANGID_CONFIDENCE sure, or,
    for English, more than MAX_FOREIGN_LETTERS of its letters in another script."""
    if wanted == "any" or not text.strip():
        return LanguageVerdict("und", 0.0, None)
    with _LOCK:
        found, confidence = _identifier().classify(text)
    if wanted == "en":
        letters = [c for c in text if c.isalpha()]
        foreign = sum(_script(c) != "LATIN" for c in letters)
        if letters and foreign / len(letters) > MAX_FOREIGN_LETTERS:
            return LanguageVerdict(found, confidence, (
                f"{foreign} of its {len(letters)} letters are not in the Latin script "
                f"(langid: {found}, {confidence:.2f})"))
    if found != wanted and confidence >= LANGID_CONFIDENCE:
        return LanguageVerdict(found, confidence,
                               f"langid finds {found} ({confidence:.2f} sure), not {wanted}")
    return LanguageVerdict(found, confidence, None)
