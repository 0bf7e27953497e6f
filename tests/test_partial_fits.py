"""Partial fits (``mtbench run --until ITERATION``): a fit stopped part-way through its budget's schedule is evaluated,
recorded as partial (``fit.iterations`` < ``budget.iterations``) and keeps its state, so that ``--resume`` continues it
to exactly the numbers of an uninterrupted fit; its leaderboard row is its own, and the reproduction page shows it only
as a partial fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtbench.board import leaderboard as lb
from mtbench.board.labels import partial_first_stage
from mtbench.board.reproduce import spec_of
from mtbench.core.errors import UserError
from mtbench.data.episodes import EpisodeSpec
from mtbench.methods import METHODS
from mtbench.results import partial_fit
from mtbench.run.checkpoints import read_checkpoint
from mtbench.run.runner import RunSpec, run
from mtbench.report.blocks import Table
from mtbench.report.reproduction import reproduction_page
from tests.support import init_doc, put_result, result_doc

BUDGET = 12  # protonet's episodes on the synthetic data; --until stops at 5, then 9


def _spec(out: Path | None, **extra) -> RunSpec:
    return RunSpec(method="protonet", dataset="synthetic", episodes=EpisodeSpec(5, 1, 2, 4, 0), budget=str(BUDGET),
                   hparams=(("train_ways", "5"),), device="cpu", out=None if out is None else str(out), progress=False,
                   **extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted fit; and one stopped at 5, continued to 9, then to the end: their results and state files."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole, _ = run(_spec(tmp_path_factory.mktemp("whole")))
        out = tmp_path_factory.mktemp("parts")
        first, _ = run(_spec(out, until=5))
        states = [sorted((out / ".resume").glob("*.pt"))]
        second, _ = run(_spec(out, until=9, resume=True))
        states.append(sorted((out / ".resume").glob("*.pt")))
        last, _ = run(_spec(out, resume=True))
        states.append(sorted((out / ".resume").glob("*.pt")))
    finally:
        torch.set_num_threads(before)
    return whole, [first, second, last], states, out


def test_a_partial_fit_is_recorded_as_one_and_keeps_its_state(runs) -> None:
    whole, (first, second, last), states, _ = runs
    assert [d["fit"]["iterations"] for d in (first, second, last)] == [5, 9, BUDGET]
    assert all(d["budget"] == {"name": str(BUDGET), "iterations": BUDGET} for d in (first, second, last))
    assert [partial_fit(d) for d in (whole, first, second, last)] == [False, True, True, False]
    assert any("stopped by --until at iteration 5 of 12" in n for n in first["fit"]["notes"])
    assert first["fit"]["tasks"] == 5 and second["fit"]["tasks"] == 9  # the work of the iterations that ran
    assert [len(s) for s in states] == [1, 1, 0]  # kept after each partial fit, gone once the fit is whole


def test_a_partial_fit_continued_ends_with_the_numbers_of_an_uninterrupted_one(runs) -> None:
    whole, (first, second, last), _, _ = runs
    assert last["accuracy"]["per_episode"] == whole["accuracy"]["per_episode"]
    assert [last["fit"][k] for k in ("iterations", "tasks", "images")] == [whole["fit"][k] for k in
                                                                          ("iterations", "tasks", "images")]
    # the partial fits are evaluated as they stood: not the whole fit's numbers
    assert first["accuracy"]["per_episode"] != whole["accuracy"]["per_episode"]


def test_until_is_checked_and_a_resume_never_goes_back(runs, tmp_path) -> None:
    for bad in (0, -3, BUDGET + 1):
        with pytest.raises(UserError, match=rf"--until {bad}: must be a whole number of iterations from 1 to the "
                                            rf"{BUDGET} budget's {BUDGET}; drop --until"):
            run(_spec(tmp_path, until=bad))
    assert not list(tmp_path.iterdir())  # nothing written
    out = tmp_path / "again"
    run(_spec(out, until=6))
    (state,) = (out / ".resume").glob("*.pt")
    saved = state.read_bytes()
    with pytest.raises(UserError, match="--until 4: the saved fit is already at iteration 6 of this loop; give "
                                        "--until 6 or more"):
        run(_spec(out, until=4, resume=True))
    assert state.read_bytes() == saved and len(list(out.glob("*.json"))) == 1  # nothing overwritten, no result


def test_a_partial_row_is_its_own_and_says_how_far_it_got(tmp_path) -> None:
    folder = tmp_path / "synthetic" / "5w1s"
    budget = {"name": "paper", "iterations": 100}
    for seed in (0, 1):
        put_result(folder, result_doc("protonet", [0.9, 0.7] * 5, fit_seed=seed, budget=budget), f"whole{seed}")
    part = result_doc("protonet", [0.5, 0.7] * 5, fit_seed=2, budget=budget)
    part["fit"]["iterations"] = 40
    put_result(folder, part, "part")
    (group,) = lb.board(tmp_path).groups
    by_seeds = {tuple(r.seeds): r for r in group.rows}
    assert set(by_seeds) == {(0, 1), (2,)}  # never averaged with the whole fits
    assert lb.budget(by_seeds[(2,)].doc) == "paper, 40 of 100 iterations (partial)"
    assert lb.budget(by_seeds[(0, 1)].doc) == "paper"
    # mtbench reproduce re-runs a partial fit as far as it went
    assert spec_of(part, None, "cpu").until == 40 and spec_of(result_doc("protonet", [0.5]), None, "cpu").until is None


def test_a_partial_fit_saved_with_save_says_how_far_it_ran(tmp_path) -> None:
    ckpt = tmp_path / "part.pt"
    doc, _ = run(_spec(tmp_path / "out", until=3, save=str(ckpt)))
    blob, _ = read_checkpoint(ckpt)
    # the iterations it ran, not its budget's: a run from it must not pass for one from the whole fit
    assert (blob["budget"], blob["iterations"], doc["fit"]["iterations"]) == (str(BUDGET), 3, 3)


def _from_saved_fit(budget: str, iterations: int, per_episode: list[float]) -> dict:
    """A ``reptile-transductive`` result that adapted a saved Reptile fit (``--budget 0 --init FILE``)."""
    doc = result_doc("reptile-transductive", per_episode,
                     init=init_doc("reptile", budget=budget, iterations=iterations))
    doc["budget"], doc["fit"]["iterations"] = {"name": "0", "iterations": 0}, 0
    return doc


def test_a_run_from_a_partial_fit_is_labelled_partial_as_that_fit(tmp_path) -> None:
    whole = METHODS.get("reptile").iterations_for("paper", "synthetic")
    part = _from_saved_fit("paper", 3000, [0.5, 0.7] * 5)
    assert partial_first_stage(part) == (3000, whole)
    assert lb.budget(part) == f"0 iterations, from a paper fit stopped at 3000 of {whole} iterations (partial)"
    assert partial_first_stage(_from_saved_fit("7", 3, [0.5])) == (3, 7)  # --budget 7 --until 3
    for doc in (_from_saved_fit("paper", whole, [0.5]), _from_saved_fit("7", 7, [0.5]), result_doc("reptile", [0.5])):
        assert partial_first_stage(doc) is None
    assert lb.budget(_from_saved_fit("paper", whole, [0.5])) == "0 iterations"
    # a 20-way Omniglot paper fit's length is that setting's recipe's (200,000 Reptile iterations), not 5-way's
    twenty = _from_saved_fit("paper", 100000, [0.5])
    twenty["init"]["dataset"], twenty["protocol"]["ways"] = "omniglot", 20
    assert partial_first_stage(twenty) == (100000, 200000)
    twenty["protocol"]["ways"] = 5
    assert partial_first_stage(twenty) is None  # 100,000: the whole of the 5-way paper budget
    # on the reproduction page, as the paper column's partial fit
    root = tmp_path / "leaderboards"
    root.mkdir()
    published = PUBLISHED.replace('ours = "protonet"', 'ours = "reptile → reptile-transductive"')
    (root / "published.toml").write_text(published)
    put_result(root / "synthetic" / "5w1s", part, "part")
    assert f"partial fit, 3000 of {whole} iterations" in _paper_cell(tmp_path)


PUBLISHED = """
[sources.doe]
authors = "Doe"
year = 2020
title = "A paper"
venue = "A venue"

[[figures]]
dataset = "synthetic"
setting = "5w1s"
name = "ProtoNet"
ours = "protonet"
accuracy = 99.0
source = "doe"
table = "Table 1"
"""


def _paper_cell(root: Path) -> str:
    built = reproduction_page(root / "leaderboards")
    assert built is not None
    table = next(b.frame for b in built.blocks if isinstance(b, Table) and "source" in b.frame.columns)
    return table.to_dict("records")[0]["paper: ours %"]


def test_the_reproduction_page_shows_a_partial_fit_as_one_until_a_whole_one_exists(tmp_path) -> None:
    folder = tmp_path / "leaderboards" / "synthetic" / "5w1s"
    (tmp_path / "leaderboards" / "published.toml").parent.mkdir(parents=True)
    (tmp_path / "leaderboards" / "published.toml").write_text(PUBLISHED)
    budget = {"name": "paper", "iterations": 100}
    for reached, seed in ((30, 0), (60, 1)):
        doc = result_doc("protonet", [0.8, 0.6] * 5, fit_seed=seed, budget=budget)
        doc["fit"]["iterations"] = reached
        put_result(folder, doc, f"part{reached}")
    line = _paper_cell(tmp_path)
    assert "partial fit, 60 of 100 iterations" in line and "30 of 100" not in line  # the furthest one
    put_result(folder, result_doc("protonet", [0.9, 0.7] * 5, fit_seed=0, budget=budget), "whole")
    line = _paper_cell(tmp_path)
    assert "80.00 ± " in line and "partial" not in line  # a whole fit replaces it


def test_fit_minutes_stops_at_an_iteration_boundary_that_until_reproduces(tmp_path) -> None:
    """``--fit-minutes``: out of time after the first iteration (a limit of a few microseconds), the fit stops at
    the next boundary as ``--until`` would: a partial result that ``--until`` its iterations scores alike, and a
    kept state that ``--resume`` (without the limit) takes to the uninterrupted fit's numbers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "timed"
        timed, _ = run(_spec(out, fit_minutes=1e-7))
        reached = timed["fit"]["iterations"]
        assert partial_fit(timed) and 1 <= reached < BUDGET
        assert any(f"stopped by --fit-minutes 1e-07 at iteration {reached} of {BUDGET}" in n
                   for n in timed["fit"]["notes"])
        again, _ = run(_spec(tmp_path / "until", until=reached))
        assert again["accuracy"]["per_episode"] == timed["accuracy"]["per_episode"]
        assert spec_of(timed, None, "cpu").until == reached  # mtbench reproduce re-runs it as far as it went
        last, _ = run(_spec(out, resume=True))
        whole, _ = run(_spec(None))
    finally:
        torch.set_num_threads(before)
    assert not partial_fit(last) and last["accuracy"]["per_episode"] == whole["accuracy"]["per_episode"]
    assert not list((out / ".resume").glob("*.pt"))  # the whole fit's result written, its state gone
    # a time limit of hours never cuts a fit short
    assert not partial_fit(run(_spec(None, fit_minutes=600))[0])


def test_a_partial_fit_continued_is_evaluated_afresh(tmp_path) -> None:
    """The evaluation a partial fit saved (``--checkpoint-every``) is of that fit's model: once its result is written
    it is gone, so ``--resume`` to a later ``--until`` scores every episode with the continued fit, as a fit run
    straight to that iteration does (a kept evaluation state would have stood for the shorter fit's scores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "parts"
        run(_spec(out, until=5, checkpoint_every=1e-9))  # a period of ~0: the evaluation is saved at every episode
        assert [p.name.endswith(".evaluation.pt") for p in (out / ".resume").iterdir()] == [False]  # the fit's alone
        continued, _ = run(_spec(out, until=9, resume=True, checkpoint_every=1e-9))
        straight, _ = run(_spec(tmp_path / "straight", until=9))
    finally:
        torch.set_num_threads(before)
    assert not any(n.startswith("evaluation resumed") for n in continued["fit"]["notes"])
    assert continued["accuracy"]["per_episode"] == straight["accuracy"]["per_episode"]


@pytest.mark.parametrize("bad", [0, -1.5, float("inf"), float("nan")])
def test_fit_minutes_must_be_a_positive_number(tmp_path, bad) -> None:
    with pytest.raises(UserError, match=rf"--fit-minutes {bad}: give a number of minutes > 0"):
        run(_spec(tmp_path / "out", fit_minutes=bad))
    assert not (tmp_path / "out").exists()
