"""Boards show only what validates: ``leaderboard``, ``compare`` and ``report`` leave out (and list, with why)
a file that fails ``validate``'s checks of the file, cannot be read, or repeats a run; the rest still shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mtbench.cli import main
from mtbench.report.build import build
from mtbench.results.screen import run_identity, screen
from support import put_result, result_doc

GOOD = [0.9, 1.0, 0.8, 0.9, 1.0]
WORSE = [0.6, 0.7, 0.5, 0.6, 0.8]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """A 5w1s folder with a good and a worse result, the worse one's mean edited to rank first, a copy of the
    good one under another name and time, a file that is not JSON, one that is not UTF-8 and a folder named
    like a result."""
    lb = tmp_path / "leaderboards"
    five = lb / "synthetic" / "5w1s"
    put_result(five, result_doc("good", GOOD))
    put_result(five, result_doc("copied", GOOD, stamp="2026-01-02T00:00:00+00:00"), "copy")
    forged = result_doc("forged", WORSE)
    forged["accuracy"]["mean"] = 0.99
    put_result(five, forged)
    (five / "broken.json").write_text("{not json")
    (five / "binary.json").write_bytes(b"\xff\xfe\x00")
    (five / "folder.json").mkdir()
    put_result(lb / "synthetic" / "5w5s", result_doc("five-shot", GOOD, shots=5))
    return lb


def _copy_of_good(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    doc["method"]["name"] = "good"
    return doc


def test_screen_keeps_valid_runs_once_and_says_why_it_leaves_the_rest_out(board: Path) -> None:
    five = board / "synthetic" / "5w1s"
    (five / "copy.json").write_text(json.dumps(_copy_of_good(json.loads((five / "copy.json").read_text()))))
    found = screen(sorted(five.iterdir()))
    assert [p.name for p, _ in found.results] == ["good.json"]
    why = {x.path.name: x.reason for x in found.left_out}
    assert sorted(why) == ["binary.json", "broken.json", "copy.json", "folder.json", "forged.json"]
    assert why["copy.json"].startswith("the same run as good.json")  # the earlier one stays
    assert why["forged.json"].startswith("accuracy.mean = 0.99 but the per-episode accuracies give 0.64")
    assert why["broken.json"].startswith("cannot read result (not JSON: ")
    assert why["binary.json"].startswith("cannot read result (not JSON: ")
    assert why["folder.json"] == "cannot read result (Is a directory)"


def test_the_same_run_is_what_ran_and_its_scores_not_the_file_or_the_time() -> None:
    doc = result_doc("good", GOOD)
    rerun = result_doc("good", GOOD, stamp="2027-01-01T00:00:00+00:00", device="another CPU")
    rerun["fit"]["seconds"] = 99.0
    assert run_identity(doc) == run_identity(rerun)
    for other in (result_doc("good", WORSE), result_doc("good", GOOD, sha="b" * 64),
                  result_doc("good", GOOD, provenance={**doc["provenance"], "precision": "bf16"}),
                  result_doc("good", GOOD, fit_seed=1)):  # a method the fit seed does not change is two runs still
        assert run_identity(other) != run_identity(doc)
    hp = result_doc("good", GOOD)
    hp["method"]["hparams"] = {"lr": 0.1}
    assert run_identity(hp) != run_identity(doc)


def test_leaderboard_ranks_only_valid_files_once_and_lists_the_others(board: Path) -> None:
    five = board / "synthetic" / "5w1s"
    (five / "copy.json").write_text(json.dumps(_copy_of_good(json.loads((five / "copy.json").read_text()))))
    for fmt in ([], ["--markdown"]):
        result = invoke("leaderboard", "--leaderboards", str(board), "--dataset", "synthetic", *fmt)
        assert result.exit_code == 0, result.output
        table, _, left = result.output.partition("Left out 5 result file(s)")
        assert "good" in table and "five-shot" in table and "forged" not in table and "copy.json" not in table
        assert table.count("good.json") == 1
        for name in ("binary.json", "broken.json", "copy.json", "folder.json", "forged.json"):
            assert name in left
        assert "accuracy.mean = 0.99" in left and "the same run as good.json" in left
    only = invoke("leaderboard", "--leaderboards", str(board), "--protocol", "5w5s")
    assert only.exit_code == 0 and "Left out" not in only.output  # the other folder's files are not its own


def test_a_folder_with_nothing_valid_is_a_one_line_error_naming_each_file(tmp_path: Path) -> None:
    lb = tmp_path / "lb"
    forged = result_doc("forged", WORSE)
    forged["accuracy"]["mean"] = 0.99
    put_result(lb / "synthetic" / "5w1s", forged)
    result = invoke("leaderboard", "--leaderboards", str(lb))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "forged.json: accuracy.mean = 0.99" in result.output
    result = invoke("compare", str(lb))
    assert result.exit_code == 2 and "forged.json: accuracy.mean = 0.99" in result.output


def test_compare_shows_the_valid_files_and_lists_the_others(board: Path) -> None:
    result = invoke("compare", str(board / "synthetic"))
    assert result.exit_code == 0, result.output
    table, _, left = result.output.partition("Left out 4 result file(s)")
    assert "forged" not in table and "copied" in table and "five-shot" in table
    assert "forged.json: accuracy.mean = 0.99" in left and "broken.json: cannot read result" in left


def test_report_pages_leave_out_and_list_the_same_files(board: Path, tmp_path: Path) -> None:
    five = board / "synthetic" / "5w1s"
    (five / "copy.json").write_text(json.dumps(_copy_of_good(json.loads((five / "copy.json").read_text()))))
    files = build(board)
    md, page = files["synthetic-5w1s.md"].decode(), files["synthetic-5w1s.html"].decode()
    ranked, _, left = md.partition("### Left out")
    assert "forged" not in ranked and "1 result;" in files["index.md"].decode()
    assert 'data-file="good.json"' in page and 'data-file="forged.json"' not in page
    for name in ("binary", "broken", "copy", "folder", "forged"):
        assert f"| {name}.json |" in left
    assert "5 left out" in files["index.md"].decode() and "Left out" not in files["synthetic-5w5s.md"].decode()
    result = invoke("report", "--leaderboards", str(board), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output


def test_report_of_a_folder_with_nothing_valid_says_so(tmp_path: Path) -> None:
    lb = tmp_path / "lb"
    put_result(lb / "synthetic" / "5w1s", result_doc("good", GOOD))
    (lb / "synthetic" / "5w5s").mkdir(parents=True)
    (lb / "synthetic" / "5w5s" / "broken.json").write_text("{not json")
    files = build(lb)
    assert "No file in `leaderboards/synthetic/5w5s/` is a valid result." in files["synthetic-5w5s.md"].decode()
    assert "no valid result; 1 left out" in files["index.md"].decode()


def test_of_two_copies_with_one_time_the_file_named_as_mtbench_names_it_stays(tmp_path: Path) -> None:
    from mtbench.results import result_filename

    doc = result_doc("good", GOOD)
    original = put_result(tmp_path, doc, Path(result_filename(doc)).stem)
    put_result(tmp_path, doc, "a-copy")
    found = screen(sorted(tmp_path.glob("*.json")))
    assert [p for p, _ in found.results] == [original]
    assert found.left_out[0].reason.startswith(f"the same run as {original.name}")
