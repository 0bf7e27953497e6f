"""The reproduction page's curves of accuracy against the length of the fit (suite/report/budget_curves.py), drawn
from the files a budget reason names: generated results in a tiny repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure

from mtbench.core.metrics import mean_ci95
from mtbench.report.budget_curves import curves_figure, length_label, panel, panels, spaced_ticks
from mtbench.report.published import Reason, load, ordered, verdict
from mtbench.report.reproduction import _status, reproduction_page
from tests.support import put_result, result_doc

PUBLISHED = """
[sources.doe]
authors = "Doe"
title = "A paper"
venue = "A venue"

[[figures]]
dataset = "synthetic"
setting = "5w1s"
name = "Reptile"
ours = "reptile"
accuracy = 95.0
source = "doe"

[[figures.reasons]]
cause = "{cause}"
text = "a longer fit scores higher"
evidence = [{evidence}]
explains = false
"""

SHORT = [0.6, 0.8] * 10  # 20 episodes
LONG = [1.0, 0.8] * 10
ROW = [0.8, 0.8] * 5  # 10 episodes: the panel reads the first 10 of each file


def fit(per_episode: list[float], iterations: int, **fields) -> dict:
    doc = result_doc("reptile", per_episode, budget={"name": str(iterations), "iterations": iterations})
    doc["method"]["hparams"] = {"inner_lr": 1e-3, "report_steps": "0"}
    for key, value in fields.items():
        doc[key] = {**doc[key], **value}
    return doc


@pytest.fixture
def repo(tmp_path) -> Path:
    here = tmp_path / "leaderboards" / "reproduction" / "budget"
    files = {
        "short": fit(SHORT, 5),
        "long": fit(LONG, 40),
        "lr": fit(LONG, 40, method={"hparams": {"inner_lr": 1e-2, "report_steps": "0"}}),  # another recipe
        "data": fit(LONG, 80, dataset={"notes": ["a copy of 50 images per class"]}),  # other training data
        "episodes": fit(LONG, 160, protocol={"episodes_sha": "b" * 64, "seed": 1}),  # other test episodes
        "row": fit(ROW, 10, method={"hparams": {"inner_lr": 1e-3, "report_steps": "0,1"}}),  # report_steps: not its recipe (Reptile.not_recipe)
    }
    for name, doc in files.items():
        put_result(here, doc, name)
    (here / "page.md").write_text("not a result\n")
    return tmp_path


def publish(repo: Path, names: list[str], cause: str = "budget") -> Path:
    evidence = ", ".join(f'"leaderboards/reproduction/budget/{n}"' for n in names)
    (repo / "leaderboards" / "published.toml").write_text(PUBLISHED.format(cause=cause, evidence=evidence))
    return repo / "leaderboards"


def pct(values: list[float]) -> tuple[float, float]:
    mean, ci = mean_ci95(values)
    return 100 * mean, 100 * ci


def test_a_panel_joins_one_recipe_by_fit_length_and_labels_another(repo):
    names = ["long.json", "lr.json", "data.json", "episodes.json", "page.md", "short.json", "row.json"]
    figures = load(publish(repo, names))
    got = panel(figures[0], repo)
    assert got is not None and got.title == "5w1s Reptile" and got.published == 95.0
    assert got.episodes == 10  # the row scored 10: every point is read on those
    by_label = {s.label: s.points for s in got.series}
    assert list(by_label) == ["reptile: the row's recipe", "reptile: inner_lr=0.01"]  # the row's first
    assert by_label["reptile: the row's recipe"] == (
        (5, *pct(SHORT[:10])), (10, *pct(ROW)), (40, *pct(LONG[:10])))
    assert by_label["reptile: inner_lr=0.01"] == ((40, *pct(LONG[:10])),)
    # the file of other training data (80 iterations) and the one of other episodes (160) are not drawn
    assert {x for points in by_label.values() for x, _, _ in points} == {5, 10, 40}


def test_no_panel_without_two_fit_lengths_or_a_budget_reason(repo):
    assert panel(load(publish(repo, ["long.json", "lr.json"]))[0], repo) is None  # one length
    assert panel(load(publish(repo, ["data.json", "row.json"]))[0], repo) is None  # other data only
    assert panel(load(publish(repo, ["short.json", "row.json"], cause="data"))[0], repo) is None
    assert panel(load(publish(repo, ["page.md"]))[0], repo) is None


def test_the_figure_draws_a_panel_per_figure_with_the_published_value(repo):
    drawn = panels(load(publish(repo, ["short.json", "lr.json", "row.json"])), repo)
    fig = Figure()
    curves_figure(drawn)(fig)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 1 and shown[0].get_title() == "5w1s Reptile (10 episodes)"
    labels = [t.get_text() for t in shown[0].get_legend().get_texts()]
    assert labels == ["published", "reptile: the row's recipe", "reptile: inner_lr=0.01"]
    assert [t.get_text() for t in shown[0].get_xticklabels()] == ["5", "10", "40"]


def test_the_page_shows_the_curves_only_where_there_are_some(repo):
    built = reproduction_page(publish(repo, ["short.json", "row.json"]))
    assert "reproduction-budget-synthetic.svg" in built.figures
    built = reproduction_page(publish(repo, ["short.json", "row.json"], cause="data"))
    assert not any(name.startswith("reproduction-budget") for name in built.figures)


def test_a_kind_of_cause_that_explains_is_not_also_listed_as_ruled_out():
    longer = Reason("a longer fit of the quick recipe does not help", (), "quick", "ruled out", ("budget",))
    split = Reason("the paper's split does not help", (), "quick", "ruled out", ("protocol",))
    paper = Reason("the paper's recipe rises with its fit", (), "quick", "explains", ("budget",))
    assert _status([longer, split, paper]) == "explained: budget; ruled out: protocol"
    assert _status([longer, paper]) == "explained: budget"
    assert _status([longer, split]) == "gap not yet explained; ruled out: budget, protocol"


def test_a_cause_measured_to_be_part_of_the_gap_is_said_in_part_not_ruled_out():
    longer = Reason("a longer fit of the quick recipe barely helps", (), "quick", "ruled out", ("budget",))
    split = Reason("the paper's split does not help", (), "quick", "ruled out", ("protocol",))
    paper = Reason("the paper's recipe rises with its fit, not yet to the published value", (), "quick", "part",
                   ("budget",))
    assert _status([longer, split, paper]) == "gap not yet explained; in part: budget; ruled out: protocol"
    assert _status([paper]) == "gap not yet explained; in part: budget"
    explained = Reason("the paper's recipe reaches the published value", (), "quick", "explains", ("budget",))
    assert _status([paper, explained, split]) == "explained: budget; ruled out: protocol"  # said once, as explaining
    assert ordered([longer, split, paper, explained]) == [explained, paper, longer, split]  # as the page lists them
    assert [verdict(r) for r in (explained, paper, longer)] == ["explains the gap", "part of the cause",
                                                                "measured, not the cause"]


def test_spaced_ticks_drop_lengths_too_close_to_read_but_keep_both_ends() -> None:
    # miniImageNet 5w1s MAML's lengths: 400/500 and 1,600/2,000 printed over each other at 7 pt
    assert spaced_ticks([250, 400, 500, 800, 1600, 2000]) == [250, 400, 800, 2000]
    assert spaced_ticks({100, 200, 250, 500, 800}) == [100, 200, 500, 800]
    assert spaced_ticks([1000, 4000]) == [1000, 4000]
    assert spaced_ticks([50, 100, 400, 800, 1600]) == [50, 100, 400, 800, 1600]  # all far enough apart
    assert spaced_ticks([7]) == [7]


def test_a_fit_stopped_by_the_clock_is_labelled_as_run() -> None:
    # 1,473 meta-iterations read "1.473k" before; round lengths keep their short form
    assert [length_label(x) for x in (700, 1473, 1500, 2186, 10000, 60000.0)] == \
        ["700", "1,473", "1.5k", "2,186", "10k", "60k"]


def test_a_variant_is_named_in_its_series_and_a_long_title_wraps(repo):
    here = repo / "leaderboards" / "reproduction" / "budget"
    for name, per_episode, iterations in (("fo-short", SHORT, 5), ("fo-row", ROW, 10)):
        doc = fit(per_episode, iterations, method={"variant": "1st order"})
        put_result(here, doc, name)
    leaderboards = publish(repo, ["fo-short.json", "fo-row.json"])
    toml = leaderboards / "published.toml"
    toml.write_text(toml.read_text().replace('name = "Reptile"', 'name = "1st-order Reptile + Transduction, long"'))
    drawn = panels(load(leaderboards), repo)
    assert [s.label for s in drawn[0].series] == ["reptile (1st order): the row's recipe"]
    fig = Figure()
    curves_figure(drawn)(fig)
    title = [ax for ax in fig.axes if ax.get_visible()][0].get_title()
    assert "\n" in title and all(len(line) <= 40 for line in title.splitlines())
