"""The report's reproduction page (suite/report/reproduction.py): published figures from a tiny
``published.toml`` beside generated results in a leaderboard folder."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from mtbench.core.errors import UserError
from mtbench.core.metrics import mean_ci95
from mtbench.report.blocks import Bullets, Code, Heading, Image, Para, Table
from mtbench.report.build import PAGES, build, write
from mtbench.report.evidence import describe
from mtbench.report.reproduction import PUBLISHED, UNEXPLAINED, reproduction_page
from mtbench.report.reproduction_figure import Line, Point, gap_figure
from tests.support import init_doc, put_result, result_doc

HOSTILE = "<script>alert(1)</script> | *bold*"
# 20 episodes of 10 queries: protonet's mean 0.9 with a 95 % CI of about ± 0.04
PROTONET = [1.0, 0.8] * 10
MATCHINGNET = [0.7, 0.5] * 10
FINETUNE = [0.6] * 10 + [0.4] * 10
PAPER = [1.0] * 19 + [0.9]

SOURCES = """
[sources.doe]
authors = "Doe & Roe"
year = 2020
title = "A paper"
venue = "A venue"

[sources.evil]
authors = "Evil"
title = "{hostile}"
venue = "nowhere"
"""

FIGURE = """
[[figures]]
dataset = "synthetic"
setting = "5w1s"
name = "{name}"
ours = "{ours}"
accuracy = {accuracy}
source = "{source}"
table = "Table 1"
"""


def figure(name: str, ours: str, accuracy: float, source: str = "doe", extra: str = "") -> str:
    return FIGURE.format(name=name, ours=ours, accuracy=accuracy, source=source) + extra


def ci_pct(values: list[float]) -> tuple[float, float]:
    mean, ci = mean_ci95(values)
    return 100 * mean, 100 * ci


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository root with a leaderboard folder of generated results and a published-figures file."""
    lb = tmp_path / "leaderboards"
    here = lb / "synthetic" / "5w1s"
    put_result(here, result_doc("protonet", PROTONET))
    put_result(here, result_doc("protonet", PAPER, budget={"name": "paper", "iterations": 1000}), "protonet-paper")
    put_result(here, result_doc("matchingnet", MATCHINGNET))
    linear = result_doc("finetune", FINETUNE)
    linear["method"]["hparams"] = {"head": "linear"}
    put_result(here, linear)
    put_result(here, result_doc("protonet", MATCHINGNET, budget={"name": "0", "iterations": 0},
                                init=init_doc("maml")), "maml-protonet")
    mean, ci = ci_pct(PROTONET)
    paper_mean, paper_ci = ci_pct(PAPER)
    text = SOURCES.format(hostile=HOSTILE) + "".join([
        # inside at the quick budget by a hair (mean + 0.9 CI), outside the paper row's interval
        figure("ProtoNet inside", "protonet", round(mean + 0.9 * ci, 3)),
        # just past the quick interval (mean + 1.1 CI): outside, no reason recorded
        figure("ProtoNet outside", "protonet", round(mean + 1.1 * ci, 3)),
        figure("MatchingNet", "matchingnet", 99.0, extra='note = "a note"\n'
               '[[figures.reasons]]\ntext = "a shorter fit scores as high"\nexplains = false\n'
               'evidence = ["leaderboards/synthetic/5w1s/matchingnet.json"]\n'),
        figure("MAML", "maml", 98.7),  # no row of ours
        figure("Baseline++", "finetune", 48.2, extra='hp = {head = "cosine"}\n'),  # our finetune is linear: not run
        figure("Baseline", "finetune", 90.0, extra='hp = {head = "linear"}\n'
               '[[figures.reasons]]\ntext = "measured: the linear head underfits (`--hp head=linear`)"\n'
               'cause = ["recipe"]\n'
               'evidence = ["leaderboards/synthetic/5w1s/finetune.json"]\nbudget = "quick"\n'),
        figure("Pipeline", "maml → protonet", 60.0),  # a --budget 0 pipeline counts at its first stage's budget
        figure(HOSTILE, "matchingnet", 50.0, source="evil"),
    ])
    (lb / PUBLISHED).write_text(text)
    assert paper_mean - paper_ci > mean + ci  # the paper row's interval lies above the quick one
    return tmp_path


def page_only(lb: Path) -> dict[str, bytes]:
    return build(lb, pages=[p for p in PAGES if p.name == "reproduction"])


def frames(lb: Path) -> list[pd.DataFrame]:
    built = reproduction_page(lb)
    assert built is not None
    return [b.frame for b in built.blocks if isinstance(b, Table)]


def by_name(lb: Path) -> dict[str, dict[str, str]]:
    table = next(f for f in frames(lb) if "source" in f.columns)  # the dataset's, after the summary's
    return {row["method"]: row for row in table.to_dict("records")}


def test_every_published_figure_is_a_row_with_its_source_and_ours_by_budget(repo):
    rows = by_name(repo / "leaderboards")
    assert list(rows) == ["ProtoNet inside", "ProtoNet outside", "MatchingNet", "MAML", "Baseline++", "Baseline",
                          "Pipeline", HOSTILE]
    mean, ci = ci_pct(PROTONET)
    paper_mean, paper_ci = ci_pct(PAPER)
    inside = rows["ProtoNet inside"]
    assert inside["source"] == "Doe & Roe 2020, Table 1" and inside["ours"] == "protonet"
    assert inside["quick: ours %"] == f"{mean:.2f} ± {ci:.2f} (1 seed)"
    assert inside["paper: ours %"] == f"{paper_mean:.2f} ± {paper_ci:.2f} (1 seed)"  # budgets never mixed
    assert inside["quick: Δ"] == f"{mean - round(mean + 0.9 * ci, 3):+.2f}"
    assert (inside["quick: inside"], inside["paper: inside"]) == ("yes", "no")
    assert rows["ProtoNet outside"]["quick: inside"] == "no"
    assert rows["MatchingNet"]["quick: inside"] == "no" and rows["MatchingNet"]["paper: ours %"] == "not run"
    assert rows["Pipeline"]["quick: ours %"] == f"{ci_pct(MATCHINGNET)[0]:.2f} ± {ci_pct(MATCHINGNET)[1]:.2f} (1 seed)"


def test_a_figure_without_a_row_of_ours_says_not_run(repo):
    rows = by_name(repo / "leaderboards")
    for name in ("MAML", "Baseline++"):  # no maml at all; a finetune with the linear head is not Baseline++
        assert [rows[name][f"{b}: ours %"] for b in ("quick", "paper")] == ["not run", "not run"]
        assert rows[name]["quick: inside"] == "-" and rows[name]["gap"] == "-"
    assert rows["Baseline"]["quick: ours %"] != "not run" and rows["Baseline"]["ours"] == "finetune --hp head=linear"


def test_a_reason_is_shown_only_where_one_is_recorded(repo):
    lb = repo / "leaderboards"
    rows = by_name(lb)
    assert rows["Baseline"]["quick: inside"] == "no"
    # the table names the kinds of cause per budget outside; the reasons follow it, with what each file measured
    assert rows["Baseline"]["gap"] == "quick: explained: recipe"
    assert rows["ProtoNet outside"]["gap"] == f"quick: {UNEXPLAINED}; paper: {UNEXPLAINED}"
    # a measurement that did not explain the gap is counted, and the gap stays unexplained
    assert rows["MatchingNet"]["gap"] == f"quick: {UNEXPLAINED}; ruled out: 1 reason naming no cause"
    assert rows["ProtoNet inside"]["gap"] == f"paper: {UNEXPLAINED}"  # inside at the quick budget, not the paper one
    assert rows["Pipeline"]["quick: inside"] == "yes" and rows["Pipeline"]["gap"] == "-"
    built = reproduction_page(lb)
    assert built is not None
    start = next(i for i, b in enumerate(built.blocks) if isinstance(b, Heading) and b.text.startswith("Why our rows"))
    end = next(i for i, b in enumerate(built.blocks) if i > start and isinstance(b, (Heading, Image)))
    section = built.blocks[start + 1:end]
    assert [b.parts[0] for b in section if isinstance(b, Para)][:2] == [
        "5w1s MatchingNet (matchingnet), published 99 %, Doe & Roe 2020, Table 1:",
        "5w1s Baseline (finetune --hp head=linear), published 90 %, Doe & Roe 2020, Table 1:"]
    bullets = [b for b in section if isinstance(b, Bullets)]
    said = ["".join(p.text if isinstance(p, Code) else p for p in item) for b in bullets for item in b.items]
    mean, ci = ci_pct(FINETUNE)
    iterations = result_doc("finetune", FINETUNE)["fit"]["iterations"]
    assert said[0] == ("both budgets, measured, not the cause: a shorter fit scores as high. Measured in "
                       f"leaderboards/synthetic/5w1s/matchingnet.json ({ci_pct(MATCHINGNET)[0]:.2f} ± "
                       f"{ci_pct(MATCHINGNET)[1]:.2f} % after {iterations} iterations).")
    assert said[1] == ("quick, explains the gap [recipe]: measured: the linear head underfits (--hp head=linear). "
                       "Measured in "
                       f"leaderboards/synthetic/5w1s/finetune.json ({mean:.2f} ± {ci:.2f} % after {iterations} "
                       "iterations).")
    assert len(said) == 2  # only the figures with a recorded reason
    paths = [p for b in bullets for item in b.items for p in item if isinstance(p, Code)]
    assert [p.text for p in paths] == ["leaderboards/synthetic/5w1s/matchingnet.json", "--hp head=linear",
                                       "leaderboards/synthetic/5w1s/finetune.json"]  # as code, as `code` in a text
    md = page_only(lb)["reproduction.md"].decode()
    summary = md[md.index("## Outside our interval"):md.index("## synthetic")]
    # 6 rows at the quick budget, 2 at the paper one; outside: ProtoNet inside (paper), ProtoNet outside (both),
    # MatchingNet, Baseline and the hostile one (quick)
    assert "outside our 95 % CI in 6 of these 8 comparisons (the reasons" in summary
    # one line each, the reasons in a few words: their text is the dataset table's, shown once
    summary_table = next(f for f in frames(lb) if "budget" in f.columns and "gap" in f.columns)
    outside = {(r["method"], r["budget"]): r for r in summary_table.to_dict("records")}
    assert sorted(outside) == sorted([("ProtoNet inside", "paper"), ("ProtoNet outside", "quick"),
                                      ("ProtoNet outside", "paper"), ("MatchingNet", "quick"), ("Baseline", "quick"),
                                      (HOSTILE, "quick")])  # not run (MAML, Baseline++) is not outside
    assert outside[("Baseline", "quick")]["gap"] == "explained: recipe"  # the kind of cause each reason names
    assert outside[("MatchingNet", "quick")]["gap"] == f"{UNEXPLAINED}; ruled out: 1 reason naming no cause"
    assert outside[("ProtoNet outside", "paper")]["gap"] == UNEXPLAINED
    paper_mean, paper_ci = ci_pct(PAPER)
    assert outside[("ProtoNet inside", "paper")]["ours %"] == f"{paper_mean:.2f} ± {paper_ci:.2f} (1 seed)"
    assert summary.count("the linear head underfits") == 0 and "Doe &amp; Roe" not in summary


def test_strings_from_the_published_file_are_escaped(repo):
    files = page_only(repo / "leaderboards")
    md, page = files["reproduction.md"].decode(), files["reproduction.html"].decode()
    for text in (md, page):
        assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert r"\| \*bold\*" in md
    for table in re.findall(r"(?:^\|.*\|\n)+", md, flags=re.M):
        cells = {len(re.split(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(cells) == 1, table
    assert "Doe &amp; Roe 2020: A paper. A venue." in md and "Doe &amp; Roe 2020: A paper. A venue." in page


def test_the_page_is_regenerated_byte_identically_and_linked_from_the_index(repo, tmp_path):
    lb = repo / "leaderboards"
    out = tmp_path / "reports"
    write(page_only(lb), out)
    def files() -> dict[str, bytes]:
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    before = files()
    write(page_only(lb), out)
    assert files() == before
    assert set(before) == {"reproduction.md", "reproduction.html", "index.md", "index.html",
                           "figures/reproduction-synthetic.svg"}
    moved = shutil.copytree(lb, tmp_path / "elsewhere" / "leaderboards")
    assert page_only(moved) == {name: data for name, data in before.items()}
    assert "[Reproduction: published figures beside ours](reproduction.md): 8 published figures; 5 outside our " \
           "95% CI at a budget; 2 not run at either budget" in before["index.md"].decode()
    assert '<a href="reproduction.html">' in before["index.html"].decode()


def test_no_published_file_no_page(repo):
    lb = repo / "leaderboards"
    (lb / PUBLISHED).unlink()
    assert reproduction_page(lb) is None
    with pytest.raises(UserError, match=f"nothing to report .* published figures in {PUBLISHED}"):
        page_only(lb)


@pytest.mark.parametrize(("change", "mentions"), [
    (('source = "evil"', 'source = "nobody"'), ["figures[7].source", "'nobody'", "it has doe, evil"]),
    (("accuracy = 98.7", "accuracy = 987"), ["figures[3].accuracy", "not a percentage"]),
    (("accuracy = 98.7", 'accuracy = "98.7"'), ["figures[3].accuracy", "is not int or float"]),
    (('ours = "maml"', 'oures = "maml"'), ["figures[3]", "unknown key(s) oures", "missing ours"]),
    (("5w1s/finetune.json", "5w1s/nothing.json"), ["reasons[0].evidence", "nothing.json does not exist"]),
    (('evidence = ["leaderboards/synthetic/5w1s/finetune.json"]', "evidence = []"), ["reasons[0].evidence: give"]),
    (('budget = "quick"', 'budget = "fast"'), ["reasons[0].budget", "'fast'"]),
    (("explains = false", 'explains = "no"'), ["figures[2].reasons[0].explains: 'no' is not true, false or \"part\""]),
    (("explains = false", "explains = 1"), ["figures[2].reasons[0].explains: 1 is not bool or str"]),
    (('cause = ["recipe"]', 'cause = ["recipe", "luck"]'),
     ["figures[5].reasons[0].cause", "'luck' is not one of budget"]),
    (("[[figures]]", "[[figures]"), ["is not valid TOML"]),
])
def test_mistakes_in_the_published_file_are_one_line_errors(repo, change, mentions):
    path = repo / "leaderboards" / PUBLISHED
    text = path.read_text()
    assert change[0] in text
    path.write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(UserError) as caught:
        reproduction_page(repo / "leaderboards")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for text in mentions:
        assert text in message, message


def test_maml_curves_files_are_shown_as_tables_and_a_bad_one_is_named(repo):
    """``mtbench bench --maml-curves`` documents in leaderboards/reproduction/: a table per file, a learner per
    row, accuracy after the last test step by meta-iteration; a file that is not one is a one-line error."""
    import json

    from mtbench.bench.curves import LEARNERS

    lb = repo / "leaderboards"
    points = lambda acc: [{"iteration": i, "seconds": 10.0 * i,  # noqa: E731
                           "by_step": [{"step": s, "mean": a, "ci95": 0.01} for s in (1, 2, 3)]}
                          for i, a in zip((0, 50), acc)]
    doc = {"machine": {"device_name": "CPU Test (2 threads)", "torch": "2.x", "git_commit": "abc" * 8},
           "maml_curves": {"seed": 0, "episodes": 100, "settings": {"inner_lr": 0.4, "train_steps": 1, "test_steps": 3,
                                                                     "meta_batch": 32, "meta_lr": 0.001,
                                                                     "train_queries": 1},
                           "curves": {name: points((0.2, 0.5 + 0.1 * k)) for k, name in enumerate(LEARNERS)}}}
    (lb / "reproduction").mkdir()
    (lb / "reproduction" / "cpu.json").write_text(json.dumps(doc))
    table = frames(lb)[-2]  # before the table of our rows
    assert list(table["learner"]) == list(LEARNERS)
    assert list(table["it 50"]) == ["50.0 ± 1.0", "60.0 ± 1.0", "70.0 ± 1.0"]
    assert list(table["by step at the end"]) == ["50.0 / 50.0 / 50.0", "60.0 / 60.0 / 60.0", "70.0 / 70.0 / 70.0"]
    (lb / "reproduction" / "junk.json").write_text("{}")
    with pytest.raises(UserError, match="junk.json is not an `mtbench bench --maml-curves` file"):
        reproduction_page(lb)


def test_transfer_evidence_shows_the_spread_of_its_trials(tmp_path):
    """A transfer result's few trials: the evidence says how far one trial fell from the mean, read from the file
    (a claim made from one split lies anywhere in that range); a run without a fit says no iterations."""
    doc = result_doc("scratch", [0.6, 0.74, 0.86, 0.7], ways=2, queries=25, budget={"name": "quick", "iterations": 0})
    doc["protocol"].update(kind="transfer", train_images=200, test_images=50, trials=4, shots=100,
                           fit_episodes={"ways": 2, "shots": 5, "queries": 15, "episodes": 1, "seed": 0})
    doc["fit"]["iterations"] = 0
    put_result(tmp_path / "lb", doc)
    mean, ci = ci_pct([0.6, 0.74, 0.86, 0.7])
    assert describe(["lb/scratch.json"], tmp_path) == (f"lb/scratch.json ({mean:.2f} ± {ci:.2f} %; its 4 trials of 50 "
                                                       f"test images from 60 to 86 %)",)


def test_evidence_of_the_same_episodes_is_paired_with_the_last_result(tmp_path):
    """Results of the same test episodes are each paired with the last one named (the row), over the episodes
    both scored: a shorter run on the first 4 episodes, another on all 6; a run of other episodes (another
    episode seed) and a file that is no result are not paired."""
    row = [0.8, 0.6, 0.9, 0.4, 0.8, 0.6]
    short = [0.6, 0.6, 0.7, 0.2]  # 0.2 below the row on 3 of its first 4 episodes
    longer = [x + 0.1 for x in row]  # 0.1 above on every episode: a zero-width interval
    put_result(tmp_path / "lb", result_doc("protonet", short), "short")
    put_result(tmp_path / "lb", result_doc("protonet", longer), "longer")
    other = result_doc("protonet", short)
    other["protocol"]["seed"] = 1
    put_result(tmp_path / "lb", other, "other")
    put_result(tmp_path / "lb", result_doc("protonet", row), "row")
    (tmp_path / "lb" / "bench.json").write_text("{}")
    got = describe(["lb/short.json", "lb/longer.json", "lb/other.json", "lb/bench.json", "lb/row.json"], tmp_path)
    diff, ci = ci_pct([-0.2, 0.0, -0.2, -0.2])
    assert got[0].endswith(f"; {diff:+.2f} ± {ci:.2f} points paired with row.json on the first 4 episodes)")
    assert diff == pytest.approx(-15.0) and ci > 0
    assert got[1].endswith("; +10.00 ± 0.00 points paired with row.json on the same 6 episodes)")
    assert "paired" not in got[2] and got[3] == "lb/bench.json" and "paired" not in got[4]


def test_evidence_from_a_saved_fit_says_how_far_that_fit_went(tmp_path):
    doc = result_doc("reptile-transductive", [0.5, 1.0], init=init_doc("reptile", budget="paper", iterations=3000))
    doc["budget"], doc["fit"]["iterations"] = {"name": "0", "iterations": 0}, 0
    put_result(tmp_path, doc, "from-fit")
    (got,) = describe(["from-fit.json"], tmp_path)
    assert got == "from-fit.json (75.00 ± 49.00 %, from a saved reptile fit of 3000 iterations)"


def test_fit_seeds_run_on_different_cpus_make_one_row_here_and_a_seed_run_twice_does_not(tmp_path):
    # accuracy does not depend on the CPU that fitted it: seeds join across CPUs, on every page
    from mtbench.report.reproduction import rows
    here = tmp_path / "lb" / "synthetic" / "5w1s"
    amd, intel = "CPU AMD Test (1 threads)", "CPU Intel Test (1 threads)"
    put_result(here, result_doc("protonet", PROTONET, device=amd, stamp="2026-01-01T00:00:00+00:00"), "s0")
    put_result(here, result_doc("protonet", PAPER, device=intel, fit_seed=1, stamp="2026-01-02T00:00:00+00:00"), "s1")
    (ours,) = rows(tmp_path / "lb")[("synthetic", "5w1s")]
    assert ours.seeds == 2 and ours.device == f"{amd}; {intel}"
    assert ours.mean == pytest.approx((mean_ci95(PROTONET)[0] + mean_ci95(PAPER)[0]) / 2)
    # fit seed 1 again, now on the AMD too: the AMD's 2-seed row joins first and the Intel's seed 1 stays apart
    put_result(here, result_doc("protonet", MATCHINGNET, device=amd, fit_seed=1, stamp="2026-01-03T00:00:00+00:00"),
               "s1-again")
    found = sorted((o.seeds, o.files) for o in rows(tmp_path / "lb")[("synthetic", "5w1s")])
    assert found == [(1, ("s1.json",)), (2, ("s0.json", "s1-again.json"))]
    gpu = result_doc("protonet", PAPER, device="NVIDIA Test GPU", fit_seed=2, stamp="2026-01-04T00:00:00+00:00")
    gpu["provenance"]["device_type"] = "cuda"
    put_result(here, gpu, "gpu")
    assert sorted(o.seeds for o in rows(tmp_path / "lb")[("synthetic", "5w1s")]) == [1, 1, 2]  # a GPU stays apart


def test_maml_curves_of_a_recipe_are_described_by_it_and_drawn(tmp_path):
    """A file of another recipe (``--curves-recipe``) is described by its own dataset, network and settings; a file
    before recipes existed reads as Finn's Omniglot 5w1s; each file gets its figure."""
    import json

    from mtbench.report.blocks import Image, Para
    from mtbench.report.maml_curves import maml_curves_section

    point = lambda it: {"iteration": it, "seconds": 1.0,  # noqa: E731
                        "by_step": [{"step": s, "mean": 0.3, "ci95": 0.01} for s in range(1, 11)]}
    settings = {"inner_lr": 0.01, "train_steps": 1, "test_steps": 10, "meta_batch": 2, "meta_lr": 0.001,
                "train_queries": 15}
    mini = {"dataset": "miniimagenet", "ways": 5, "shots": 1, "width": 32}
    machine = {"device_name": "CPU Test (1 threads)", "torch": "2.x", "git_commit": None}
    (tmp_path / "reproduction").mkdir()
    for name, extra, seeds in (("a-old.json", {}, {}), ("b-mini.json", mini, {}), ("c-fit1.json", {}, {"fit_seed": 1})):
        doc = {"machine": machine, "maml_curves": {"seed": 0, "episodes": 200, "settings": {**settings, **extra},
                                                   "curves": {"mtbench maml": [point(0), point(500)],
                                                              "learn2learn-style": [point(0), point(500)]},
                                                   **seeds}}
        (tmp_path / "reproduction" / name).write_text(json.dumps(doc))
    blocks, figures = maml_curves_section(tmp_path)
    texts = [b.parts[0] for b in blocks if isinstance(b, Para) and isinstance(b.parts[0], str)]
    assert any(t.startswith("a-old.json: omniglot 5w1s, 64-channel Conv4") for t in texts)
    assert any(t.startswith("b-mini.json: miniimagenet 5w1s, 32-channel Conv4, inner lr 0.01, 1 inner step in "
                            "training and 10 at test") and "15 queries per class" in t for t in texts)
    # the fit seed: a file before --curves-fit-seed drew its fit from its episode seed
    assert any(t.startswith("a-old.json") and "fit seed 0, episode seed 0" in t for t in texts)
    assert any(t.startswith("c-fit1.json") and "fit seed 1, episode seed 0" in t for t in texts)
    assert b"fit seed 1" in figures["maml-curves-c-fit1.svg"]
    assert sorted(figures) == ["maml-curves-a-old.svg", "maml-curves-b-mini.svg", "maml-curves-c-fit1.svg"]
    assert all(f.startswith(b"<?xml") for f in figures.values())
    assert [b.src for b in blocks if isinstance(b, Image)] == [f"figures/{n}" for n in sorted(figures)]
    assert maml_curves_section(tmp_path / "none") == ([], {})


def test_a_curves_file_as_evidence_says_what_it_measured_paired(tmp_path):
    """Named as a reason's evidence, a curves file shows each learner's last accuracy and the first learner minus
    the others, paired on the same episodes."""
    import json

    point = lambda per: {"iteration": 500, "seconds": 1.0, "per_episode": per,  # noqa: E731
                         "by_step": [{"step": 1, "mean": sum(per) / len(per), "ci95": 0.05}]}
    doc = {"machine": {"device_name": "CPU", "torch": "2.x", "git_commit": None},
           "maml_curves": {"seed": 0, "episodes": 4, "settings": {},
                           "curves": {"mtbench maml": [point([0.2, 0.4, 0.6, 0.4])],
                                      "learn2learn-style": [point([0.2, 0.2, 0.4, 0.4])]}}}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    mean, ci = ci_pct([0.0, 0.2, 0.2, 0.0])
    assert describe(["c.json"], tmp_path) == (
        "c.json (after 500 meta-iterations on the same tasks and 4 test episodes: mtbench maml 40.00 ± 5.00 %, "
        f"learn2learn-style 30.00 ± 5.00 %; mtbench maml minus learn2learn-style +{mean:.2f} ± {ci:.2f} points "
        "paired)",)


def test_each_dataset_gets_a_figure_of_the_published_values_beside_ours(repo):
    built = reproduction_page(repo / "leaderboards")
    images = [b for b in built.blocks if isinstance(b, Image)]
    assert "figures/reproduction-synthetic.svg" in [i.src for i in images]
    assert built.figures["reproduction-synthetic.svg"].startswith(b"<?xml")


def test_the_figure_draws_the_published_value_and_ours_with_a_partial_fit_hollow():
    lines = [Line("5w1s A", 90.0, {"quick": Point(80.0, 1.0), "paper": Point(85.0, 2.0, partial=True)}),
             Line("5w5s B", 99.0, {"quick": Point(97.0, 0.5)})]
    fig = Figure()
    gap_figure("d", lines)(fig)
    (ax,) = fig.axes
    # the first line at the top; published crosses on the lines, our rows just above (quick) or below (paper)
    assert ax.collections[0].get_offsets().tolist() == [[90.0, 1.0], [99.0, 0.0]]
    bars = {c.get_label(): c.lines[0] for c in ax.containers}
    quick, partial = bars["ours, quick budget, 95% CI"], bars["ours, paper budget (partial fit), 95% CI"]
    assert list(quick.get_xdata()) == [80.0, 97.0] and list(quick.get_ydata()) == pytest.approx([1.15, 0.15])
    assert list(partial.get_xdata()) == [85.0] and partial.get_markerfacecolor() == "none"
    assert "ours, paper budget, 95% CI" not in bars  # no whole paper fit: nothing drawn as one
    assert [t.get_text() for t in ax.get_yticklabels()] == ["5w1s A", "5w5s B"]
