"""The report's leaderboard pages: one per ``leaderboards/<dataset>/<setting>/`` folder of results.

Each page shows every rankable group of the folder (:mod:`mtbench.board.leaderboard`) as its ranked table,
a row per configuration over its training seeds (HTML: ``<table class="leaderboard">``, each
``<tr data-file="...">`` naming the row's first file; the fits of the rows over several seeds get a
table of the same class, a ``<tr data-file>`` per file, so every result file has a row) and three
figures: accuracy with its 95 % CI, adaptation curves (accuracy against the adaptation step and
against the time inside ``adapt``), and accuracy against evaluation throughput. The official plan's
rows that have no result yet are listed with the command that runs them, and every result's
provenance is tabulated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from mtbench.board import leaderboard as lb
from mtbench.board.labels import distinct_labels, fit_seeded
from mtbench.core.errors import UserError
from mtbench.results.layout import folder, folders
from mtbench.results.screen import LeftOut
from mtbench.report.blocks import FIGURES, Block, Built, Code, Heading, Image, Link, Page, Para, Table, svg


def pages(leaderboards: Path) -> list[Page]:
    """One page per results folder, official settings first (in the plan's order), then the others."""
    from mtbench.board.official import load_plan

    order = {(s.dataset, s.name): i for i, s in enumerate(load_plan().settings)}
    found = sorted(folders(leaderboards), key=lambda f: (order.get(f, len(order)), f))
    return [Page(f"{dataset}-{setting}", f"Leaderboard: {dataset} {setting}",
                 f"result files in {dataset}/{setting}/",
                 lambda root, d=dataset, s=setting: board_page(root, d, s)) for dataset, setting in found]


def _color(i: int, n: int) -> Any:
    """Row ``i``'s colour of ``n``: matplotlib's ten-colour cycle, or tab20 beyond ten rows."""
    from matplotlib import colormaps

    return f"C{i}" if n <= 10 else colormaps["tab20"](i % 20)


def _short_device(doc: dict[str, Any]) -> str:
    prov = doc["provenance"]
    return prov["device"].removeprefix("NVIDIA ") if prov["device_type"] == "cuda" else "CPU"


def _names(g: lb.Group) -> list[str]:
    """A figure label per row: rank, method, device, seeds when several (the rank keeps two runs of one method
    apart)."""
    names = distinct_labels([r.doc for r in g.rows])
    return [f"{i}. {names[i - 1]}{' [submission]' if r.doc['submission'] else ''} ({_short_device(r.doc)}"
            f"{f', {len(r.entries)} seeds' if len(r.entries) > 1 else ''})" for i, r in enumerate(g.rows, 1)]


def _accuracy_figure(g: lb.Group) -> tuple[Callable[[Any], None], tuple[float, float]]:
    names = _names(g)

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        for i, r in enumerate(g.rows):
            ax.errorbar(r.accuracy.mean, i, xerr=r.accuracy.ci95, fmt="o", color=_color(i, len(names)), capsize=3)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_xlabel("accuracy (mean and 95% CI over the shared episodes and the row's seeds)")
        ax.set_title(f"Accuracy, {g.dataset} {g.setting}")
        ax.grid(axis="x", alpha=0.3)

    return draw, (8.0, 1.2 + 0.3 * len(names))


def _adaptation_figure(g: lb.Group) -> Callable[[Any], None]:
    names = _names(g)

    def draw(fig: Any) -> None:
        by_step, by_time = fig.subplots(1, 2)
        for i, r in enumerate(g.rows):
            steps, acc, ms = r.curve()
            style = {"marker": "o", "markersize": 3, "color": _color(i, len(names)), "label": names[i]}
            by_step.plot(steps, acc, **style)
            by_time.plot([max(t, 1e-3) for t in ms], acc, **style)
        by_step.set_xscale("symlog", linthresh=1)
        by_step.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        by_step.set_xlabel("adaptation step (symmetric log scale)")
        by_step.set_ylabel("accuracy")
        by_time.set_xscale("log")
        by_time.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        by_time.xaxis.set_minor_formatter(NullFormatter())
        by_time.set_xlabel("ms inside adapt per episode (log scale)")
        for ax in (by_step, by_time):
            ax.grid(alpha=0.3)
        by_step.set_title("accuracy against adaptation steps")
        by_time.set_title("accuracy against adaptation time")
        by_step.legend(loc="upper left", bbox_to_anchor=(0, -0.18), frameon=False, ncols=2, fontsize=7)

    return draw


def _throughput_figure(g: lb.Group) -> Callable[[Any], None]:
    names = _names(g)

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        for i, r in enumerate(g.rows):
            rate = r.mean_of(lambda d: d["evaluation"]["tasks_per_s"])
            acc = r.accuracy
            if not (math.isfinite(rate) and rate > 0):
                continue
            ax.errorbar(rate, acc.mean, yerr=acc.ci95, fmt="o", color=_color(i, len(names)), capsize=3,
                        label=names[i])
            ax.annotate(str(i + 1), (rate, acc.mean), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("evaluation throughput: episodes (adapt + predict) per second, log scale")
        ax.set_ylabel("accuracy (95% CI)")
        ax.set_title(f"Accuracy against throughput, {g.dataset} {g.setting} (points numbered by rank)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.14), frameon=False, ncols=2, fontsize=7)

    return draw


def _provenance(g: lb.Group) -> pd.DataFrame:
    """A line per result file: its row's rank, its training seed and where it came from."""
    rows = []
    for i, r in enumerate(g.rows, 1):
        for e in r.entries:
            prov, sub = e.doc["provenance"], e.doc["submission"]
            commit = (prov["git_commit"] or "unknown")[:10] + (" (dirty)" if prov["git_dirty"] else "")
            rows.append({"rank": i, "file": e.path.name, "fit seed": lb.fit_seed(e.doc), "commit": commit,
                         "torch": prov["torch"], "precision": prov["precision"], "when (UTC)": prov["timestamp"],
                         "submission sha256": sub["source_sha256"][:16] if sub else "-",
                         "command": prov["command"] or "-"})
    return pd.DataFrame(rows)


def _fits(g: lb.Group) -> list[Block]:
    """The fits of the group's rows over several seeds, each with its own accuracy (CI over the episodes)."""
    many = [(i, r) for i, r in enumerate(g.rows, 1) if len(r.entries) > 1]
    if not many:
        return []
    fits = [(i, r, e) for i, r in many for e in r.entries]
    names = distinct_labels([r.doc for r in g.rows])
    frame = pd.DataFrame([{"rank": i, "method": names[i - 1], "fit seed": lb.fit_seed(e.doc),
                           "accuracy ± 95% CI (episodes)": f"{e.doc['accuracy']['mean']:.4f} ± "
                                                           f"{e.doc['accuracy']['ci95']:.4f}",
                           "fit s": f"{lb.fit_seconds(e.doc):.0f}",
                           "eval episodes/s": f"{e.doc['evaluation']['tasks_per_s']:.1f}",
                           "device": lb.device(e.doc), "file": e.path.name} for i, r, e in fits])
    return [Heading("Fits of the rows over several seeds", 3),
            Para(("Each training seed's own result, with the timings of the device it ran on; the row above "
                  "averages their accuracy, and the timings of the seeds on the device it names. How far the seeds "
                  "of every such row spread, against a single fit's CI: ", Link("Training seeds", "seeds"), ".")),
            Table(frame, css="leaderboard", keys=tuple(e.path.name for _, _, e in fits))]


def _about(dataset: str) -> list[Block]:
    """What the folder's dataset is, as its registered class describes it (nothing for one not registered here)."""
    from mtbench.data import DATASETS

    try:
        return [Para((Code(dataset), f": {DATASETS.get(dataset).description}.",))]
    except UserError:
        return []


def _missing(leaderboards: Path, dataset: str, setting: str) -> list[Block]:
    from mtbench.board.official import load_plan, missing

    try:
        chosen = load_plan().select(dataset, setting)
    except UserError:  # not an official setting
        return []
    todo = missing(leaderboards, chosen)
    if not todo:
        return [Para(("Every row of the official plan for this setting has a result.",))]
    return [Para((f"Official rows without a result yet ({len(todo)}): {', '.join(e.label for _, e in todo)}. ",
                  Code(f"mtbench official --dataset {dataset} --setting {setting}"), " runs them."))]


def _left_out(left: list[LeftOut]) -> list[Block]:
    """The files of the folder the page does not show, each with why."""
    if not left:
        return []
    return [
        Heading("Left out", 3),
        Para((f"{len(left)} file(s) of this folder are not shown: they fail the checks ", Code("mtbench validate"),
              (" makes on a file alone (the schema; accuracies that add up to the recorded mean and CI), cannot be "
               "read, or repeat a run shown above."))),
        Table(pd.DataFrame([{"file": x.path.name, "why": x.reason} for x in left])),
    ]


def board_page(leaderboards: Path, dataset: str, setting: str) -> Built | None:
    found = lb.board(leaderboards, dataset, setting)
    groups = found.groups
    page = f"{dataset}-{setting}"
    n = sum(len(g.entries) for g in groups)
    left = f"; {len(found.left_out)} left out" if found.left_out else ""
    if not groups:
        return Built(f"no valid result{left}", [Para(("No file in ", Code(f"leaderboards/{dataset}/{setting}/"),
                                                      " is a valid result.")), *_left_out(found.left_out)])
    top = max(groups, key=lambda g: g.rows[0].accuracy.mean)
    best, name = top.rows[0], distinct_labels([r.doc for r in top.rows])[0]
    summary = (f"{n} result{'s' * (n > 1)}; best {name} {best.accuracy.mean:.4f} ± "
               f"{best.accuracy.ci95:.4f} on {best.shape()}, {_short_device(best.doc)}{left}")
    blocks: list[Block] = [
        Para(("Every result file in ", Code(f"leaderboards/{dataset}/{setting}/"), f" ({n}), ranked by accuracy "
              "on the episodes all of them share: results on other draws, protocols or schema versions form "
              "tables of their own. The results of one configuration that differ only by their training seed "
              "form one row, whatever CPU ran each seed, its mean over the seeds with a CI that counts the "
              "variance between seeds; a single-seed row's CI covers the test episodes only. Rows come from ",
              Code("mtbench official"), " (the baselines) and ", Code("mtbench submit"), " (outside methods, marked "
              "[submission]); the device column says where each ran (a row's timings: the CPU that ran most of its "
              "seeds), and (CPU) marks a quick-budget run on the CPU. Print the same table with ",
              Code(f"mtbench leaderboard --dataset {dataset} --protocol {setting}"), ".")),
        *_about(dataset),
        *_missing(leaderboards, dataset, setting),
    ]
    figures: dict[str, bytes] = {}
    for g in groups:
        stem = f"{page}-{g.sha[:8]}" if len(groups) > 1 else page
        figures[f"{stem}-accuracy.svg"] = svg(*_accuracy_figure(g))
        curves = any(r.doc["adaptation"]["steps"] > 1 for r in g.rows)
        if curves:
            figures[f"{stem}-adaptation.svg"] = svg(_adaptation_figure(g), (10.0, 4.0))
        figures[f"{stem}-throughput.svg"] = svg(_throughput_figure(g), (7.0, 4.5))
        blocks += [
            Heading(g.title),
            Table(lb.frame(g), css="leaderboard", keys=tuple(r.path.name for r in g.rows)),
            Para((lb.LEGEND.format(f=lb.FRACTION),)),
            *_fits(g),
            Image(f"{FIGURES}/{stem}-accuracy.svg", f"accuracy with 95% CI of each row, {g.title}"),
            Image(f"{FIGURES}/{stem}-adaptation.svg", f"accuracy against adaptation step and time, {g.title}")
            if curves else Para(("No adaptation curves: every method here predicts after a single step.",)),
            Image(f"{FIGURES}/{stem}-throughput.svg", f"accuracy against evaluation episodes per second, {g.title}"),
            Heading("Provenance", 3),
            Table(_provenance(g)),
        ]
    return Built(summary, blocks + _left_out(found.left_out), figures)


def overview(leaderboards: Path) -> list[Block]:
    """The index's matrix of the official plan: each method's accuracy in each official setting (the result
    ``mtbench official`` counts, the newest with that label, as the leaderboard row it belongs to: over its
    training seeds when there are several, joined across the CPUs that ran them), or that it has not run yet;
    nothing when the folder holds no official row at all."""
    from mtbench.board.official import load_plan, present
    from mtbench.results import read_result

    plan = load_plan()
    labels = list(dict.fromkeys(e.label for s in plan.settings for e in s.entries))
    found = {(s.dataset, s.name): present(folder(leaderboards, s.dataset, s.name), s) for s in plan.settings}
    if not any(found.values()):
        return []
    board_rows = {path: r for s in plan.settings if found[(s.dataset, s.name)]
                  for g in lb.board(leaderboards, s.dataset, s.name).groups for r in g.rows
                  for path in (e.path for e in r.entries)}
    rows, have, total = [], 0, 0
    for name in labels:
        row = {"method": name}
        for s in plan.settings:
            column = f"{s.dataset} {s.name}"
            path = found[(s.dataset, s.name)].get(name)
            planned = any(e.label == name for e in s.entries)
            total += planned
            if path is None:
                row[column] = "not run yet" if planned else "-"
                continue
            have += 1
            shown = board_rows.get(path)
            doc = shown.doc if shown else read_result(path)
            mean, ci = ((shown.accuracy.mean, shown.accuracy.ci95) if shown
                        else (doc["accuracy"]["mean"], doc["accuracy"]["ci95"]))
            seeds = len(shown.entries) if shown else 1
            notes = ([_short_device(doc)] if doc["provenance"]["device_type"] == "cuda" else []) + [
                "nothing fitted" if not fit_seeded(doc)
                else f"{seeds} seed{'s' * (seeds > 1)}"]
            row[column] = f"{mean:.3f} ± {ci:.3f}" + (f" ({', '.join(notes)})" if notes else "")
        rows.append(row)
    return [
        Heading("Official leaderboard"),
        Para((f"Accuracy ± 95% CI of every method in every official setting at the {plan.budget} budget ({have} of "
              f"{total} rows run; a GPU row names its GPU, the others ran on the CPU; each row says over how many "
              "training seeds, joined across the CPUs that ran them: a single fit's CI covers its test episodes "
              "only; scratch fits nothing, so no fit seed changes it). Each setting's page ranks them with paired "
              "differences, adaptation speed and cost. ", Code("mtbench official"), " runs the missing rows.")),
        Table(pd.DataFrame(rows)),
        *_plan_cost(leaderboards, plan, found),
        Heading("Pages"),
    ]


def _plan_cost(leaderboards: Path, plan: Any, found: dict[tuple[str, str], dict[str, Path]]) -> list[Block]:
    """What the official rows cost on the CPU, as their results recorded it: the fit and evaluation seconds of each
    row's first result against those of the result the matrix shows, over the rows whose both results ran on the
    CPU (the issue of batched evaluation asked for the plan's total before and after)."""
    from mtbench.board.official import first_results
    from mtbench.results import read_result

    sums = {"first": [0.0, 0.0], "now": [0.0, 0.0]}
    rows, changed = 0, 0
    for s in plan.settings:
        first = first_results(folder(leaderboards, s.dataset, s.name), s)
        for name in dict.fromkeys(e.label for e in s.entries):
            path = found[(s.dataset, s.name)].get(name)
            docs = {"first": read_result(first[name]), "now": read_result(path)} if path and name in first else {}
            if not docs or any(d["provenance"]["device_type"] != "cpu" for d in docs.values()):
                continue
            rows += 1
            changed += first[name] != path
            for when, doc in docs.items():
                sums[when][0] += doc["fit"]["seconds"]
                sums[when][1] += doc["evaluation"]["seconds"]
    if not rows:
        return []
    table = pd.DataFrame([{"results": what, "fit (h)": f"{fit / 3600:.2f}", "evaluation (h)": f"{ev / 3600:.2f}",
                           "total (h)": f"{(fit + ev) / 3600:.2f}"}
                          for what, (fit, ev) in (("each row's first result", sums["first"]),
                                                  ("the results shown above", sums["now"]))])
    return [
        Heading("What the official rows cost on the CPU", 3),
        Para((f"The {rows} rows of the matrix that ran on the CPU ({changed} of them rerun since their first result, "
              "after a change of code or of version), as their result files record it: fit and evaluation seconds, "
              "summed. Each run recorded its own seconds on a 2-core machine of its day (the CPUs differ from "
              "day to day), most of them beside another job, so the totals say what filling the plan cost, not how "
              "fast the code is; the throughput page compares speeds side by side in one run.",)),
        Table(table),
    ]
