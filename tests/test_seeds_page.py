"""The report's training-seed page (:mod:`mtbench.report.seeds`) on generated results with hand-counted answers:
each row over several seeds beside a single fit's episode CI, and the pairs of rows single fits rank the other way."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtbench.board.leaderboard import group
from mtbench.core.metrics import mean_ci95
from mtbench.report.build import PAGES, build
from mtbench.report.seeds import FIGURE, flips, pairs_of_rows, seeds_page, spreads
from support import put_result, result_doc


def fit(method: str, scores: tuple[float, float], seed: int) -> dict:
    """A 10-episode result of ``method`` with fit seed ``seed`` whose episodes score ``scores`` in turn."""
    return result_doc(method, list(scores) * 5, fit_seed=seed, stamp=f"2026-01-01T00:0{seed}:00+00:00")


# A: 3 seeds (0.8, 0.6, 0.7; mean 0.7); B: 2 seeds (0.65, 0.55; mean 0.6); C: one fit (0.5). Single fits rank B
# above A in 1 of the 6 pairs of fits (A's 0.6 under B's 0.65); every fit of A and B is above C's.
FITS = [("protonet", (0.9, 0.7), 0), ("protonet", (0.7, 0.5), 1), ("protonet", (0.8, 0.6), 2),
        ("matchingnet", (0.7, 0.6), 0), ("matchingnet", (0.6, 0.5), 1), ("maml", (0.6, 0.4), 0)]


@pytest.fixture
def leaderboards(tmp_path: Path) -> Path:
    lb = tmp_path / "leaderboards"
    for method, scores, seed in FITS:
        put_result(lb / "synthetic" / "5w1s", fit(method, scores, seed), f"{method}_fit{seed}")
    return lb


def test_rows_over_seeds_beside_a_single_fits_episode_ci():
    [g] = group([(Path(f"{m}_{s}.json"), fit(m, a, s)) for m, a, s in FITS])
    a, b = spreads([g])
    assert (a.rank, a.name, a.row.seeds, b.rank, b.name, b.row.seeds) == (1, "protonet", [0, 1, 2], 2, "matchingnet",
                                                                          [0, 1])
    assert a.accuracies == pytest.approx([0.8, 0.6, 0.7]) and a.range == pytest.approx(0.2)
    # every fit of A has the same episode spread (±0.1), so a fit's CI is that of any of them
    assert a.fit_ci == pytest.approx(mean_ci95([0.9, 0.7] * 5)[1]) and a.wider
    assert b.range == pytest.approx(0.1) and b.fit_ci == pytest.approx(mean_ci95([0.7, 0.6] * 5)[1])
    assert b.wider == (0.1 > b.fit_ci)


def test_pairs_of_rows_single_fits_rank_the_other_way():
    [g] = group([(Path(f"{m}_{s}.json"), fit(m, a, s)) for m, a, s in FITS])
    # A-B (6 pairs of fits), A-C (3), B-C (2); two single-seed rows (none here) would have one pair: left out
    assert [(a.name, b.name) for a, b in pairs_of_rows(g)] == [("protonet", "matchingnet"), ("protonet", "maml"),
                                                                ("matchingnet", "maml")]
    [f] = flips(g)
    assert (f.higher.name, f.lower.name, f.reversed, f.pairs) == ("protonet", "matchingnet", 1, 6)
    assert f.difference[0] == pytest.approx(0.1)


def test_the_page_and_its_index_line(leaderboards):
    files = build(leaderboards, pages=[p for p in PAGES if p.name == "seeds"])
    md, page = files["seeds.md"].decode(), files["seeds.html"].decode()
    assert f"figures/{FIGURE}" in files and files[f"figures/{FIGURE}"].startswith(b"<?xml")
    assert "2 of the 3 leaderboard rows have several seeds" in md
    assert "| 1 | protonet | quick (CPU) | 0, 1, 2 | 0.8000 / 0.6000 / 0.7000 | 20.00 | 10.00 |" in md
    assert "1. protonet, quick (CPU) (3 seeds) | 2. matchingnet, quick (CPU) (2 seeds)" in md
    assert "| 1 of 6 |" in md and "<td>1 of 6</td>" in page
    # by method, least spread first: B's fits 10 points apart, A's 20
    by_b, by_a = "| matchingnet | quick | 1 | 10.00 | 10.00 (synthetic 5w1s) |", "| protonet | quick | 1 | 20.00 |"
    assert by_b in md and by_a in md and md.index(by_b) < md.index(by_a)
    assert "single fits could rank 1 of 3 pairs of rows the other way round" in files["index.md"].decode()


def test_no_page_without_a_row_over_several_seeds(tmp_path):
    lb = tmp_path / "leaderboards"
    put_result(lb / "synthetic" / "5w1s", fit("protonet", (0.9, 0.7), 0))
    put_result(lb / "synthetic" / "5w1s", fit("maml", (0.7, 0.5), 0))
    assert seeds_page(lb) is None
    assert "seeds.md" not in build(lb)
