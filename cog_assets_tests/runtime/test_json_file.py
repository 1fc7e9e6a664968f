"""Small JSON files replaced whole: read back, never half-written, no temporary left."""

from __future__ import annotations

import pytest

from cog_assets.runtime.json_file import read_json, write_json


def test_written_value_reads_back_and_replaces_the_old(tmp_path):
    path = tmp_path / "deep" / "costs.json"
    write_json(path, {"a": 1})
    write_json(path, {"b": [2, 3]}, indent=1)
    assert read_json(path) == {"b": [2, 3]}
    assert [p.name for p in path.parent.iterdir()] == ["costs.json"]


@pytest.mark.parametrize("text", [None, "", "{half", "\x00\xff"])
def test_a_missing_or_damaged_file_reads_as_none(tmp_path, text):
    path = tmp_path / "x.json"
    if text is not None:
        path.write_text(text, encoding="latin-1")
    assert read_json(path) is None


def test_a_value_that_fails_to_serialise_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "counts.json"
    write_json(path, {"kept": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert read_json(path) == {"kept": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["counts.json"]
