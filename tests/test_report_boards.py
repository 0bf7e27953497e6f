"""The report's leaderboard pages, from generated result files: golden Markdown and HTML, escaping of
every string from a result, the table rows, figures, stale pages, and the official rows still missing."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mtbench.report.build import build, report
from support import put_result, result_doc

GOLDEN = Path(__file__).resolve().parent / "golden" / "report"
HOSTILE = "<script>alert(1)</script>"


def board(root: Path) -> Path:
    """A small, fixed leaderboard: three results on shared draws, one on others, one in another setting."""
    lb = root / "leaderboards"
    five = lb / "synthetic" / "5w1s"
    rerun = {"by": "a@b", "at": "2026-01-02T00:00:00+00:00", "device": "CPU Test Processor (2 threads)",
             "git_commit": None, "verdict": "REPRODUCED", "identical": True, "mean_difference": 0.0}
    put_result(five, result_doc("alpha", [0.9, 1.0, 0.8, 0.9, 1.0], by_step=[0.2, 0.7, 0.88],
                                ms_by_step=[0.5, 3.0, 9.0, 30.0], reproduced=[rerun]))
    put_result(five, result_doc("beta", [0.7, 0.8, 0.6, 0.9, 0.7], device="NVIDIA Test GPU",
                                provenance={**result_doc("b", [1.0])["provenance"], "device": "NVIDIA Test GPU",
                                            "device_type": "cuda"}))
    put_result(five, result_doc("gamma", [0.6, 0.6, 0.7, 0.5, 0.6],
                                submission={"source": "mine.py", "class": "Gamma", "source_sha256": "f" * 64}))
    put_result(five, result_doc("delta", [0.5, 0.5, 0.5, 0.5, 0.5], sha="b" * 64))
    put_result(lb / "synthetic" / "5w5s", result_doc("alpha", [1.0, 0.9, 1.0], shots=5))
    return lb


def test_pages_match_the_golden_files(tmp_path):
    """The Markdown and HTML of the index and the leaderboard pages, byte for byte. After an intended change,
    regenerate them with MTBENCH_UPDATE_GOLDEN=1 and review the diff."""
    files = build(board(tmp_path))
    pages = {name: data for name, data in files.items() if name.endswith((".md", ".html"))}
    assert sorted(pages) == ["index.html", "index.md", "synthetic-5w1s.html", "synthetic-5w1s.md",
                             "synthetic-5w5s.html", "synthetic-5w5s.md"]
    if os.environ.get("MTBENCH_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, data in pages.items():
            (GOLDEN / name).write_bytes(data)
    for name, data in pages.items():
        assert data == (GOLDEN / name).read_bytes(), f"{name} differs from tests/golden/report/{name}"
    assert build(board(tmp_path / "again")) == files  # figures too: the same bytes from the same files


def test_leaderboard_page_has_ranked_rows_figures_and_provenance(tmp_path):
    lb = board(tmp_path)
    out = tmp_path / "reports"
    report(lb, out)
    page = (out / "synthetic-5w1s.html").read_text()
    assert page.count('<table class="leaderboard">') == 2  # the other draws get a table of their own
    rows = re.findall(r'<tr data-file="([^"]+)"><td>(\d+)</td><td>([^<]+)</td>', page)
    assert rows == [("alpha.json", "1", "alpha"), ("beta.json", "2", "beta"),
                    ("gamma.json", "3", "gamma [submission]"), ("delta.json", "1", "delta")]
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (out / src).is_file() and (out / src).read_bytes().startswith(b"<?xml")
    assert len(re.findall(r'<img src="figures/synthetic-5w1s-[0-9a-f]{8}-(?:accuracy|adaptation|throughput)\.svg"',
                          page)) == 5  # the other draws' single-step row has no adaptation curves
    assert "No adaptation curves: every method here predicts after a single step." in page
    assert "ffffffffffffffff" in page and "NVIDIA Test GPU" in page  # submission sha, device
    index = (out / "index.html").read_text()
    assert '<a href="synthetic-5w1s.html">' in index and "4 results; best alpha 0.9200" in index


def test_every_string_from_a_result_is_escaped(tmp_path):
    lb = tmp_path / "lb"
    doc = result_doc(HOSTILE, [1.0, 0.9], device="<img src=x onerror=alert(2)> | *b*",
                     provenance={**result_doc("x", [1.0])["provenance"], "command": "mtbench run --hp x=`$(rm)`|",
                                 "device": "<img src=x onerror=alert(2)> | *b*"})
    put_result(lb / "synthetic" / "5w1s", doc, "hostile")
    out = tmp_path / "reports"
    report(lb, out)
    md, page = (out / "synthetic-5w1s.md").read_text(), (out / "synthetic-5w1s.html").read_text()
    for text in (md, page, (out / "index.md").read_text(), (out / "index.html").read_text()):
        assert "<script" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    for table in re.findall(r"(?:^\|.*\|\n)+", md, flags=re.M):  # a | in a value adds no column
        assert len({len(re.split(r"(?<!\\)\|", line)) for line in table.splitlines()}) == 1, table
    assert all("<script" not in p.read_text() for p in (out / "figures").glob("*.svg"))


def test_stale_generated_pages_go_and_other_files_stay(tmp_path):
    lb = board(tmp_path)
    out = tmp_path / "reports"
    report(lb, out)
    (out / "README.md").write_text("kept\n")
    for p in (lb / "synthetic" / "5w5s").glob("*.json"):
        p.unlink()
    report(lb, out)
    assert not (out / "synthetic-5w5s.html").exists() and not (out / "synthetic-5w5s.md").exists()
    assert (out / "README.md").read_text() == "kept\n" and (out / "synthetic-5w1s.html").is_file()
    assert not list((out / "figures").glob("synthetic-5w5s-*"))


def test_official_rows_without_a_result_are_listed_with_their_command(tmp_path):
    lb = tmp_path / "lb"
    put_result(lb / "omniglot" / "20w1s", result_doc("protonet", [0.5, 0.75], dataset="omniglot", ways=20,
                                                     queries=1))
    files = build(lb)
    md = files["omniglot-20w1s.md"].decode()
    assert "Official rows without a result yet (7): matchingnet, feature-extract" in md
    assert "`mtbench official --dataset omniglot --setting 20w1s`" in md
    index = files["index.md"].decode()  # the matrix of the official plan
    assert "## Official leaderboard" in index and "(1 of 50 rows run;" in index
    assert "| protonet | not run yet | not run yet | 0.625 ± 0.245 (1 seed) | not run yet |" in index


@pytest.mark.parametrize(("bad", "why"), [("{not json", "cannot read result"), ("[]", "not a valid mtbench result")])
def test_a_malformed_result_is_listed_and_the_rest_reported(tmp_path, bad, why):
    lb = board(tmp_path)
    (lb / "synthetic" / "5w1s" / "broken.json").write_text(bad)
    md = build(lb)["synthetic-5w1s.md"].decode()
    assert f"| broken.json | {why}" in md and "| 1 | alpha |" in md
