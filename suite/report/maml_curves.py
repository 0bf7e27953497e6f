"""The reproduction page's section on MAML against a learn2learn-style loop: one table and one figure per
``mtbench bench --maml-curves`` file in ``<leaderboards>/reproduction/``.

Each file holds, per learner, the accuracy after every test step at each scored meta-iteration, with its 95 % CI
over the test episodes (:mod:`mtbench.bench.curves`). The table shows the accuracy after the last test step by
meta-iteration, and every test step at the end; the figure draws the same last-step accuracies against
meta-iterations. A file written before the recipes existed is Finn et al.'s Omniglot 5-way 1-shot setting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from mtbench.core.errors import UserError
from mtbench.core.metrics import mean_ci95
from mtbench.report.blocks import FIGURES, Block, Code, Heading, Image, Para, Table, svg

CURVES = "reproduction"  # folder of the leaderboard folder holding `mtbench bench --maml-curves` files
#: what a file written before ``--curves-recipe`` ran on (the recipe ``omniglot-finn``)
OMNIGLOT_FINN = {"dataset": "omniglot", "ways": 5, "shots": 1, "width": 64}


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """``(curves, machine, learners)`` of one file, or a :class:`UserError` naming it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        curves, machine = doc["maml_curves"], doc["machine"]
        learners = curves["curves"]
        next(iter(learners.values()))[0]["by_step"][-1]["mean"]
    except (OSError, ValueError, KeyError, TypeError, StopIteration, IndexError) as exc:
        raise UserError(f"{path} is not an `mtbench bench --maml-curves` file ({exc}); remove it or write "
                        f"it again") from None
    return curves, machine, learners


def _fit_seed(curves: dict[str, Any]) -> int:
    """The seed of the fit's weights and tasks: a file written before ``--curves-fit-seed`` drew them from its
    episode seed."""
    return curves.get("fit_seed", curves["seed"])


def _describe(name: str, curves: dict[str, Any], machine: dict[str, Any]) -> str:
    s = {**OMNIGLOT_FINN, **curves["settings"]}
    plural = lambda n, one, many: f"{n} {one if n == 1 else many}"  # noqa: E731
    return (f"{name}: {s['dataset']} {s['ways']}w{s['shots']}s, {s['width']}-channel Conv4, inner lr "
            f"{s['inner_lr']}, {plural(s['train_steps'], 'inner step', 'inner steps')} in training and "
            f"{s['test_steps']} at test, meta-batch {s['meta_batch']}, Adam {s['meta_lr']}, "
            f"{plural(s['train_queries'], 'query', 'queries')} per class in training; fit seed {_fit_seed(curves)}, "
            f"episode seed {curves['seed']}, the same tasks and the same {curves['episodes']} test episodes for every "
            f"learner; accuracy (%) after "
            f"{s['test_steps']} test steps ± 95 % CI over the episodes; on {machine['device_name']}, torch "
            f"{machine['torch']}, commit {(machine['git_commit'] or 'unknown')[:12]}.")


def _figure(title: str, learners: dict[str, list[dict[str, Any]]], test_steps: int, ways: int) -> Any:
    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ax.axhline(100 / ways, linestyle="--", color="grey", linewidth=1, label=f"chance ({ways}-way)")
        for k, (learner, points) in enumerate(learners.items()):
            last = [p["by_step"][-1] for p in points]
            ax.errorbar([p["iteration"] + 0.004 * k * points[-1]["iteration"] for p in points],
                        [100 * s["mean"] for s in last], yerr=[100 * s["ci95"] for s in last], marker="o",
                        markersize=3, capsize=3, label=learner)
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel(f"accuracy (%) after {test_steps} test steps, 95% CI")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=7)

    return draw


def maml_curves_section(leaderboards: Path) -> tuple[list[Block], dict[str, bytes]]:
    """The section's blocks and figures (file name -> SVG); nothing when the folder holds no file."""
    blocks: list[Block] = []
    figures: dict[str, bytes] = {}
    for path in sorted((leaderboards / CURVES).glob("*.json")):
        curves, machine, learners = _read(path)
        iterations = [p["iteration"] for p in next(iter(learners.values()))]
        table = pd.DataFrame({"learner": list(learners)} | {
            f"it {i}": [f"{100 * pts[k]['by_step'][-1]['mean']:.1f} ± {100 * pts[k]['by_step'][-1]['ci95']:.1f}"
                        for pts in learners.values()] for k, i in enumerate(iterations)} | {
            "by step at the end": [" / ".join(f"{100 * s['mean']:.1f}" for s in pts[-1]["by_step"])
                                   for pts in learners.values()]})  # speed: the bench's side-by-side ratios, not these
        s = {**OMNIGLOT_FINN, **curves["settings"]}
        figure = f"{path.stem}.svg" if path.stem.startswith("maml-curves") else f"maml-curves-{path.stem}.svg"
        figures[figure] = svg(_figure(f"MAML against the learn2learn-style loop, {s['dataset']} {s['ways']}w"
                                      f"{s['shots']}s, fit seed {_fit_seed(curves)}", learners,
                                      s["test_steps"], s["ways"]), (7.0, 3.8))
        blocks += [Para((_describe(path.name, curves, machine),)), Table(table),
                   Image(f"{FIGURES}/{figure}", f"accuracy against meta-iterations of each learner, {path.name}")]
    if not blocks:
        return [], {}
    return [Heading("MAML against a learn2learn-style loop"),
            Para(("mtbench's MAML, the same MAML started from the peer's initialisation (Xavier weights, zero biases, "
                  "BatchNorm scales uniform in [0, 1]), and a learn2learn-style clone/adapt loop in plain PyTorch (",
                  Code("suite/bench/peer.py"), "), written by ", Code("mtbench bench --maml-curves N"), " (",
                  Code("--curves-recipe"), " picks the tasks and settings).",)),
            *blocks], figures


def describe_curves(path: Path) -> str | None:
    """What a curves file measured, for a reason's evidence on the reproduction page: each learner's accuracy at
    the last scored iteration, and the first learner minus each other one, paired on the same episodes (files
    that keep each episode's accuracy); ``None`` for a file that is not one."""
    try:
        curves, _, learners = _read(path)
    except UserError:
        return None
    last = {name: points[-1] for name, points in learners.items()}
    first, *others = list(last)
    text = (f"after {last[first]['iteration']} meta-iterations on the same tasks and {curves['episodes']} test "
            "episodes: " + ", ".join(f"{name} {100 * p['by_step'][-1]['mean']:.2f} ± "
                                     f"{100 * p['by_step'][-1]['ci95']:.2f} %" for name, p in last.items()))
    a = last[first].get("per_episode")
    for name in others:
        b = last[name].get("per_episode")
        if a and b and len(a) == len(b):
            mean, ci = mean_ci95([x - y for x, y in zip(a, b)])
            text += f"; {first} minus {name} {100 * mean:+.2f} ± {100 * ci:.2f} points paired"
    return text
