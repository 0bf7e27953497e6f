"""A row at the paper budget is checked against the hparams ``--budget paper`` resolves to: the leaderboard's
``off_paper_recipe`` names what differs, and the reproduction page prefers a row on the recipe and labels one off it."""

from __future__ import annotations

import dataclasses

from mtbench.board.labels import off_paper_recipe
from mtbench.methods import METHODS, make_hparams
from mtbench.report.blocks import Table
from mtbench.report.reproduction import PUBLISHED, reproduction_page
from tests.support import init_doc, put_result, result_doc

PAPER = {"name": "paper", "iterations": 200000}


def _paper(method: str, setting: str = "20w1s") -> dict:
    return dataclasses.asdict(make_hparams(METHODS.get(method), "omniglot", {}, "paper", setting=setting))


def _omniglot(method: str, hparams: dict, **top) -> dict:
    doc = result_doc(method, [1.0, 0.9] * 5, dataset="omniglot", ways=20, shots=1, **top)
    doc["method"]["hparams"] = hparams
    return doc


def test_a_paper_row_with_the_recipe_is_on_it_and_one_with_a_changed_hparam_names_it():
    paper = _paper("reptile")
    assert paper["eval_batch"] != 0  # the 20-way recipe adapts on batches of its own at test
    assert off_paper_recipe(_omniglot("reptile", paper, budget=PAPER)) == {}
    off = _omniglot("reptile", {**paper, "eval_steps": 97, "report_steps": "0,5"}, budget=PAPER)
    assert off_paper_recipe(off) == {"eval_steps": (97, paper["eval_steps"])}  # report_steps: not the recipe's
    assert off_paper_recipe(_omniglot("reptile", {**paper, "eval_steps": 97})) == {}  # another budget: unchecked
    # a result of older code lacks hparams: one added later counts at the value it ran with, others not at all
    older = {k: v for k, v in paper.items() if k not in ("eval_batch", "eval_steps")}
    assert off_paper_recipe(_omniglot("reptile", older, budget=PAPER)) == {"eval_batch": (0, paper["eval_batch"])}


def test_a_variant_and_how_tasks_are_computed_are_not_off_the_recipe():
    maml = _paper("maml")
    fomaml = {**maml, "first_order": True, "task_batching": "loop"}  # FOMAML is a row of its own
    doc = _omniglot("maml", fomaml, budget=PAPER)
    doc["method"]["variant"] = "1st order"
    assert off_paper_recipe(doc) == {}
    on_gpu = _omniglot("maml", {**maml, "cuda_graph": not maml["cuda_graph"]}, budget=PAPER)
    on_gpu["provenance"]["device_type"] = "cuda"  # a device's own hparam (device_hparams) is not the recipe's
    assert off_paper_recipe(on_gpu) == {}
    assert off_paper_recipe(_omniglot("maml", {**fomaml, "inner_lr": 0.4}, budget=PAPER)) == {
        "inner_lr": (0.4, maml["inner_lr"])}


def test_a_saved_paper_fit_scored_without_the_papers_test_recipe_says_so():
    fit = init_doc("reptile", dataset="omniglot", budget="paper", hparams=_paper("reptile"), iterations=200000)
    scored = _paper("reptile-transductive")
    on = _omniglot("reptile-transductive", scored, budget={"name": "0", "iterations": 0}, init=fit)
    assert off_paper_recipe(on) == {}
    off = _omniglot("reptile-transductive", {**scored, "eval_steps": 97, "eval_batch": 0},
                    budget={"name": "0", "iterations": 0}, init=fit)
    assert off_paper_recipe(off) == {"eval_steps": (97, scored["eval_steps"]), "eval_batch": (0, scored["eval_batch"])}


def _paper_cell(root) -> str:
    built = reproduction_page(root)
    assert built is not None
    table = next(b.frame for b in built.blocks if isinstance(b, Table) and "source" in b.frame.columns)
    return table.to_dict("records")[0]["paper: ours %"]


def test_the_reproduction_page_prefers_the_recipe_and_labels_a_row_off_it(tmp_path):
    lb = tmp_path / "leaderboards"
    here = lb / "omniglot" / "20w1s"
    (lb / PUBLISHED).parent.mkdir(parents=True)
    (lb / PUBLISHED).write_text('[sources.x]\nauthors = "X"\ntitle = "t"\nvenue = "v"\n\n[[figures]]\n'
                                'dataset = "omniglot"\nsetting = "20w1s"\nname = "Reptile"\nours = "reptile"\n'
                                'accuracy = 89.0\nsource = "x"\n')
    paper = _paper("reptile")
    # off the recipe, over two seeds and newer: the most seeds would win among rows on it alike
    for seed in (0, 1):
        put_result(here, _omniglot("reptile", {**paper, "inner_lr": 0.003}, budget=PAPER, fit_seed=seed,
                                   stamp="2026-02-01T00:00:00+00:00"), f"off{seed}")
    assert _paper_cell(lb).endswith(f"; not --budget paper's hparams: inner_lr=0.003 (paper: {paper['inner_lr']}))")
    put_result(here, _omniglot("reptile", paper, budget=PAPER), "on")
    assert _paper_cell(lb).endswith("(1 seed)")


def test_the_leaderboard_says_when_a_paper_budget_row_is_off_the_recipe():
    from mtbench.board.leaderboard import budget

    paper = _paper("reptile")
    assert budget(_omniglot("reptile", paper, budget=PAPER)) == "paper"
    assert budget(_omniglot("reptile", {**paper, "inner_lr": 0.003}, budget=PAPER)) == \
        "paper (not --budget paper's hparams: inner_lr=0.003)"
