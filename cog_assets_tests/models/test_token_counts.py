"""Caption token counts are remembered per tokenizer, so unchanged captions load no tokenizer."""

from __future__ import annotations

import json

import pytest

from cog_assets.core.profiles import get_profile
from cog_assets.models.text_encoder import count_tokens, load_tokenizer
from cog_assets.models.token_counts import TokenCountCache
from cog_assets.models.weights import WeightsSource

TOKENIZER = load_tokenizer(WeightsSource(get_profile("tiny")))
CAPTIONS = ["a red ball moves slowly", "a dog in the city street at night", "x" * 300]


class Counter:
    """The real tokenizer's counts, with the captions it was asked for."""

    def __init__(self):
        self.asked: list[list[str]] = []

    def __call__(self, captions: list[str]) -> list[int]:
        self.asked.append(list(captions))
        return count_tokens(TOKENIZER, captions)


def test_counts_are_the_tokenizers_and_counted_once(tmp_path):
    counter = Counter()
    expected = count_tokens(TOKENIZER, CAPTIONS)
    assert TokenCountCache(tmp_path, "tok-a").counts(CAPTIONS, counter) == expected
    again = TokenCountCache(tmp_path, "tok-a").counts(CAPTIONS[::-1] + CAPTIONS[:1], counter)
    assert again == expected[::-1] + expected[:1]
    assert counter.asked == [CAPTIONS]  # the second call counted nothing


def test_only_new_captions_are_counted_each_once(tmp_path):
    counter = Counter()
    cache = TokenCountCache(tmp_path, "tok-a")
    cache.counts(CAPTIONS[:1], counter)
    got = cache.counts([CAPTIONS[1], CAPTIONS[0], CAPTIONS[1]], counter)
    assert counter.asked == [CAPTIONS[:1], [CAPTIONS[1]]]
    assert got == count_tokens(TOKENIZER, [CAPTIONS[1], CAPTIONS[0], CAPTIONS[1]])


def test_another_tokenizer_counts_for_itself(tmp_path):
    TokenCountCache(tmp_path, "tok-a").counts(CAPTIONS, Counter())
    other = Counter()
    assert TokenCountCache(tmp_path, "tok-b").counts(CAPTIONS, other) == count_tokens(
        TOKENIZER, CAPTIONS)
    assert other.asked == [CAPTIONS]


@pytest.mark.parametrize("text", ["{broken", "[]", '{"tokenizer": "tok-a", "counts": []}',
                                  '{"tokenizer": "tok-z", "counts": {}}'])
def test_a_damaged_or_foreign_file_means_counting_again(tmp_path, text):
    cache = TokenCountCache(tmp_path, "tok-a")
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    cache.path.write_text(text)
    counter = Counter()
    assert cache.counts(CAPTIONS, counter) == count_tokens(TOKENIZER, CAPTIONS)
    assert counter.asked == [CAPTIONS]


def test_a_remembered_value_that_is_no_count_is_counted_again(tmp_path):
    cache = TokenCountCache(tmp_path, "tok-a")
    cache.counts(CAPTIONS, Counter())
    raw = json.loads(cache.path.read_text())
    first, second = list(raw["counts"])[:2]
    raw["counts"][first], raw["counts"][second] = -1, "7"
    cache.path.write_text(json.dumps(raw))
    counter = Counter()
    assert cache.counts(CAPTIONS, counter) == count_tokens(TOKENIZER, CAPTIONS)
    assert counter.asked == [CAPTIONS[:2]]
