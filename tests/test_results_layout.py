"""The leaderboard folder's layout (``mtbench.results.layout``): settings' folders and the walks over results."""

from __future__ import annotations

import pytest

from mtbench.core.errors import UserError
from mtbench.results.layout import THROUGHPUT, folder, folders, leaderboard_files, result_files


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


def test_folders_and_walks_skip_the_throughput_folder(tmp_path):
    a = _touch(folder(tmp_path, "omniglot", "5w1s") / "a.json")
    b = _touch(folder(tmp_path, "xray", "transfer200-50") / "b.json")
    deep = _touch(tmp_path / "omniglot" / "5w1s" / "old" / "c.json")
    _touch(tmp_path / THROUGHPUT / "cpu.json")
    _touch(tmp_path / THROUGHPUT / "x" / "cpu.json")  # looks like a setting folder, is not one
    _touch(tmp_path / "omniglot" / "notes.txt")
    assert folder(tmp_path, "omniglot", "5w1s") == tmp_path / "omniglot" / "5w1s"
    assert leaderboard_files(tmp_path) == [a, b]  # exactly <dataset>/<setting>/*.json
    assert folders(tmp_path) == [("omniglot", "5w1s"), ("xray", "transfer200-50")]
    assert result_files([tmp_path]) == sorted([a, b, deep])  # folders given are searched recursively
    assert result_files([b, tmp_path / "omniglot"]) == [b, a, deep]
    assert folders(tmp_path / "missing") == []
    with pytest.raises(UserError, match="does not exist"):
        result_files([tmp_path / "missing"])
