"""The report's reproduction page: published accuracies beside our leaderboard rows of the same setting.

The published figures are data, in ``<leaderboards>/published.toml`` (read by :mod:`mtbench.report.published`):
each with its source, the leaderboard row of ours it is compared with, and the *measured* reasons why our
interval misses it. The file lives in the leaderboard folder because a report is made from that folder
alone; without it the page is not written.

For each figure the page shows our row at the quick and at the paper budget (never mixed): mean ±
95 % CI, in %, and the number of training seeds the leaderboard row averages; the difference to the
published value; and whether the published value lies inside our interval. A figure outside it shows
the kinds of cause measured, or "gap not yet explained": a reason is never assumed; the reasons themselves,
with the files that measured them, follow each dataset's table. The figures outside our interval are
listed first, one line each with the kinds of cause measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mtbench.board import leaderboard as lb
from mtbench.board.labels import fit_seeded, label, off_paper_recipe, partial_first_stage
from mtbench.results import partial_fit
from mtbench.report.blocks import (FIGURES, Block, Built, Bullets, Code, Heading, Image, Inline, Link, Para, Table,
                                   slugs, svg)
from mtbench.report.budget_curves import curves_figure, panels
from mtbench.report.budget_curves import figure_size as curves_size
from mtbench.report.maml_curves import maml_curves_section
from mtbench.report.published import BUDGETS, PUBLISHED, UNEXPLAINED, Figure, Reason, load, ordered, verdict
from mtbench.report.reproduction_figure import Line, Point, figure_size, gap_figure

# -- our rows --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ours:
    """One leaderboard row as the page compares it: accuracy as fractions, over ``seeds`` training seeds."""

    label: str
    hparams: Mapping[str, Any]
    budget: str  # quick, paper, or another budget (not compared)
    mean: float
    ci95: float
    seeds: int
    files: tuple[str, ...]
    device: str
    when: str
    partial: tuple[int, int] | None = None  # a fit stopped by --until: (iterations reached, the budget's)
    off_recipe: tuple[tuple[str, Any, Any], ...] = ()  # at the paper budget: (hparam, ran, --budget paper's)
    fitted: bool = True  # whether a fit seed could change it (labels.fit_seeded): scratch's "nothing fitted"

    def inside(self, published: float) -> bool:
        return self.mean - self.ci95 <= published / 100 <= self.mean + self.ci95

    def shown(self, unit: str = "") -> str:
        """``mean ± CI`` in %, and the number of training seeds of the row (and how far a partial fit got)."""
        part = f"; partial fit, {self.partial[0]} of {self.partial[1]} iterations" if self.partial else ""
        if self.off_recipe:
            part += "; not --budget paper's hparams: " + ", ".join(f"{k}={a} (paper: {b})"
                                                                   for k, a, b in self.off_recipe)
        seeds = f"{self.seeds} seed{'s' * (self.seeds != 1)}" if self.fitted else "nothing fitted"
        return f"{100 * self.mean:.2f} ± {100 * self.ci95:.2f}{unit} ({seeds}{part})"


def _budget(doc: dict[str, Any]) -> str:
    """The budget a row was fitted at: a pipeline's own when it trains, else its first stage's (``reptile →
    reptile-transductive`` adapts a quick Reptile fit with ``--budget 0``)."""
    if doc["budget"]["iterations"] == 0 and doc["init"]:
        return doc["init"]["budget"]
    return doc["budget"]["name"]


def rows(leaderboards: Path) -> dict[tuple[str, str], list[Ours]]:
    """Our rows per (dataset, setting): the leaderboard's rows (seeds joined across the CPUs that ran them)."""
    found: dict[tuple[str, str], list[Ours]] = {}
    for g in lb.board(leaderboards).groups:
        ran_on = {e.path: lb.device(e.doc) for r in g.rows for e in r.entries}
        for r in g.rows:
            doc = r.doc  # over its training seeds: the mean and seed-aware CI, as a leaderboard row's
            found.setdefault((g.dataset, g.setting), []).append(Ours(
                label(doc), doc["method"]["hparams"], _budget(doc), r.accuracy.mean, r.accuracy.ci95, len(r.entries),
                tuple(e.path.name for e in r.entries), "; ".join(dict.fromkeys(ran_on[e.path] for e in r.entries)),
                max(e.doc["provenance"]["timestamp"] for e in r.entries),
                (doc["fit"]["iterations"], doc["budget"]["iterations"]) if partial_fit(doc)
                else partial_first_stage(doc), tuple((k, *d) for k, d in off_paper_recipe(doc).items()),
                fit_seeded(doc)))
    return found


def is_row_of(figure: Figure, o: Ours) -> bool:
    """Whether our row ``o`` is the kind of row ``figure`` is compared with: its label and hparams."""
    return o.label == figure.ours and all(k in o.hparams and o.hparams[k] == v for k, v in figure.hp)


def pick(figure: Figure, candidates: list[Ours], budget: str) -> tuple[Ours | None, int]:
    """Our row for ``figure`` at ``budget``: of the rows with its label and hparams, one with the paper budget's
    hparams (less those the figure sets) before one without, a whole fit before a partial one (then the furthest
    partial one), then the one over the most seeds, then the newest; and how many rows matched."""
    given = dict(figure.hp)
    matching = [dataclasses.replace(o, off_recipe=tuple(d for d in o.off_recipe if d[0] not in given))
                for o in candidates if o.budget == budget and is_row_of(figure, o)]
    if not matching:
        return None, 0
    return max(matching, key=lambda o: (not o.off_recipe, o.partial is None, o.partial and o.partial[0], o.seeds,
                                        o.when, o.files)), len(matching)


# -- the page --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compared:
    figure: Figure
    ours: dict[str, tuple[Ours | None, int]]  # by budget

    def outside(self) -> list[str]:
        """The budgets at which the published value lies outside our interval."""
        return [b for b in BUDGETS if (o := self.ours[b][0]) is not None and not o.inside(self.figure.accuracy)]

    def gap(self) -> str:
        """At each budget whose row misses the published value, the kinds of cause measured (:func:`_status`);
        the reasons themselves follow the dataset's table (:func:`_reasons`)."""
        return "; ".join(f"{b}: {_status(self.reasons(b))}" for b in self.outside()) or "-"

    def reasons(self, budget: str) -> list[Reason]:
        return [r for r in self.figure.reasons if r.budget in (None, budget)]


def _cells(c: Compared, budget: str) -> dict[str, str]:
    o = c.ours[budget][0]
    if o is None:
        return {f"{budget}: ours %": "not run", f"{budget}: Δ": "-", f"{budget}: inside": "-"}
    return {f"{budget}: ours %": o.shown(), f"{budget}: Δ": f"{100 * o.mean - c.figure.accuracy:+.2f}",
            f"{budget}: inside": "yes" if o.inside(c.figure.accuracy) else "no"}


def _lines(compared: list[Compared]) -> list[Line]:
    """``compared`` for the dataset's figure: each one's setting and method (and our row's label where several
    share them: the X-ray claim's "meta-learning + transfer"), the published value and our rows, in %."""
    names = [f"{c.figure.setting} {c.figure.name}" for c in compared]
    return [Line(name + (f" ({c.figure.matches})" if names.count(name) > 1 else ""), c.figure.accuracy,
                 {b: Point(100 * o.mean, 100 * o.ci95, o.partial is not None) for b in BUDGETS if (o := c.ours[b][0])})
            for name, c in zip(names, compared)]


def _table(compared: list[Compared]) -> pd.DataFrame:
    return pd.DataFrame([{"setting": c.figure.setting, "method": c.figure.name, "ours": c.figure.matches,
                          "published %": c.figure.published, "source": c.figure.cited,
                          **_cells(c, "quick"), **_cells(c, "paper"), "gap": c.gap()} for c in compared])


def _which(compared: list[Compared]) -> pd.DataFrame:
    out = []
    for c in compared:
        for budget in BUDGETS:
            o, n = c.ours[budget]
            if o is not None:
                out.append({"dataset": c.figure.dataset, "setting": c.figure.setting, "ours": c.figure.matches,
                            "budget": budget, "seeds": o.seeds, "file(s)": ", ".join(o.files), "device": o.device,
                            "other matching rows": n - 1})
    return pd.DataFrame(out).drop_duplicates(ignore_index=True)


def _status(reasons: list[Reason]) -> str:
    """A gap's reasons in a few words (the dataset's table gives them in full): the kinds of cause measured to
    explain it, else that it is not explained, then those measured to be part of the cause, then those measured and
    ruled out (a kind that explains, or in part, is not also listed as ruled out: a longer fit of one recipe may not
    help where that of another does)."""
    explaining = {c for r in reasons if r.finding == "explains" for c in r.cause}
    shown = explaining | {c for r in reasons if r.finding == "part" for c in r.cause}
    said = {"explains": set(), "part": explaining, "ruled out": shown}  # kinds already said before each finding

    def kinds(finding: str) -> str:
        chosen = [r for r in reasons if r.finding == finding]
        named = ", ".join(dict.fromkeys(c for r in chosen for c in r.cause if c not in said[finding]))
        untagged = sum(not r.cause for r in chosen)
        return named + (f"{', ' * bool(named)}{untagged} reason{'s' * (untagged != 1)} naming no cause" if untagged
                        else "")

    status = f"explained: {kinds('explains')}" if any(r.finding == "explains" for r in reasons) else UNEXPLAINED
    part = kinds("part")
    ruled_out = kinds("ruled out")
    return status + (f"; in part: {part}" if part else "") + (f"; ruled out: {ruled_out}" if ruled_out else "")


def _summary(compared: list[Compared]) -> list[Block]:
    outside = [(c, b) for c in compared for b in c.outside()]
    run = {b: sum(c.ours[b][0] is not None for c in compared) for b in BUDGETS}
    partial = sum(c.ours["paper"][0] is not None and c.ours["paper"][0].partial is not None for c in compared)
    partly = f" ({partial} of them partial fits, stopped part-way through the paper's schedule)" if partial else ""
    head = Para((f"{len(compared)} published figures; a row of ours at the quick budget for {run['quick']}, at the "
                 f"paper budget for {run['paper']}{partly}. The published value lies outside our 95 % CI in "
                 f"{len(outside)} of these {run['quick'] + run['paper']} comparisons"
                 + (" (the reasons, with the files that measured them, are in each dataset's table below):"
                    if outside else "."),))
    table = pd.DataFrame([{"dataset": c.figure.dataset, "setting": c.figure.setting, "method": c.figure.name,
                           "ours": c.figure.matches, "budget": b, "published %": c.figure.published,
                           "ours %": o.shown(), "Δ": f"{100 * o.mean - c.figure.accuracy:+.2f}",
                           "gap": _status(c.reasons(b))}
                          for c, b in outside if (o := c.ours[b][0]) is not None])
    return [head, *([Table(table)] if outside else [])]


def _reasons(compared: list[Compared]) -> list[Block]:
    """Each figure's recorded reasons, one bullet each: the budget it is about, what it found, the kinds of cause,
    its text, and the files that measured it with what each measured (read from them)."""
    blocks: list[Block] = []
    for c in compared:
        if not c.figure.reasons:
            continue
        blocks.append(Para((f"{c.figure.setting} {c.figure.name} ({c.figure.matches}), published "
                            f"{c.figure.published} %, {c.figure.cited}:",)))
        items = []
        for r in ordered(c.figure.reasons):
            head = f"{r.budget or 'both budgets'}, {verdict(r)}" + (f" [{', '.join(r.cause)}]" if r.cause else "")
            measured: list[Inline] = []
            for i, (path, said) in enumerate(zip(r.files, r.evidence)):  # said: the path and what it measured
                measured += ["; " if i else "", Code(path), said.removeprefix(path)]
            # `code` in a reason's text (a command, an hparam) shows as code
            text = [Code(t) if k % 2 else t for k, t in enumerate(f"{head}: {r.text.rstrip('. ')}".split("`")) if t]
            items.append((*text, ". Measured in ", *measured, "."))
        blocks.append(Bullets(tuple(items)))
    return [Heading("Why our rows miss these figures", 3), *blocks] if blocks else []


def _others(dataset: str, compared: list[Compared], ours: dict[tuple[str, str], list[Ours]]) -> list[Block]:
    """Our rows of the compared settings that no figure is about, so that the tables hide none of them."""
    settings = list(dict.fromkeys(c.figure.setting for c in compared))
    rest = [(s, o) for s in settings for o in sorted(ours.get((dataset, s), []), key=lambda o: (o.label, o.files))
            if o.budget in BUDGETS and not any(c.figure.setting == s and is_row_of(c.figure, o) for c in compared)]
    if not rest:
        return []
    return [Para((f"Our other {dataset} rows in these settings, with no published figure: "
                  + "; ".join(f"{s} {o.label} ({o.budget}) {o.shown(' %')}" for s, o in rest) + ".",))]


def reproduction_page(leaderboards: Path) -> Built | None:
    """The page, or ``None`` when the leaderboard folder has no published-figures file."""
    figures = load(leaderboards)
    if figures is None:
        return None
    ours = rows(leaderboards)
    compared = [Compared(f, {b: pick(f, ours.get((f.dataset, f.setting), []), b) for b in BUDGETS}) for f in figures]
    outside = sum(bool(c.outside()) for c in compared)
    missing = sum(all(o is None for o, _ in c.ours.values()) for c in compared)
    blocks: list[Block] = [
        Para(("Each published accuracy (", Code(f"leaderboards/{PUBLISHED}"), ": the figure, its source and the "
              "leaderboard row of ours it is compared with) beside our row of the same setting at the quick and at "
              "the paper budget, never mixed: mean ± 95 % CI in %, over the training seeds the leaderboard row "
              "averages (its CI includes their spread when there are several; seeds join whatever CPU ran them). "
              "Δ: ours minus published, in points. "
              "inside: whether the published value lies in our interval. gap: at each budget whose row misses the "
              "published value, the kinds of cause measured to explain the gap, to be part of it (in part) or not to "
              "be its cause (ruled out), or \"" + UNEXPLAINED + "\" while none explains it; the reasons, each with "
              "the files that measured it and what each file measured, follow each dataset's table. A budget "
              "without a row says \"not run\"; ", Code("mtbench official"), " and ",
              Code("mtbench run --budget paper"), " fill them. A paper-budget fit stopped part-way (",
              Code("--until"), ", to be continued with ", Code("--resume"), ") is shown as a partial fit with the "
              "iterations it reached, only while no whole fit of the row exists; a paper-budget row whose hparams "
              "are not those ", Code("--budget paper"), " gives today (a ", Code("--hp"), " beside it) names them.",)),
        Heading("Outside our interval"),
        *_summary(compared),
    ]
    drawn: dict[str, bytes] = {}
    for dataset in dict.fromkeys(c.figure.dataset for c in compared):
        here = [c for c in compared if c.figure.dataset == dataset]
        name = f"reproduction-{slugs([dataset])[dataset]}.svg"
        drawn[name] = svg(gap_figure(dataset, _lines(here)), figure_size(len(here)))
        notes = dict.fromkeys(f"{c.figure.setting} {c.figure.name}: {c.figure.note}" for c in here if c.figure.note)
        blocks += [Heading(dataset), Image(f"{FIGURES}/{name}", f"{dataset}: each published accuracy and our rows"),
                   Table(_table(here)), *_others(dataset, here, ours),
                   *([Para(("Notes:",)), Bullets(tuple((n,) for n in notes))] if notes else [])]
        if budget := panels([c.figure for c in here], Path(leaderboards).resolve().parent):
            name = f"reproduction-budget-{slugs([dataset])[dataset]}.svg"
            drawn[name] = svg(curves_figure(budget), curves_size(len(budget)))
            blocks += [Para(("How the accuracy moves with the length of the fit, from the files the budget reasons "
                             "below name: each at its fit's iterations against its accuracy on the first test "
                             "episodes all of a panel's files scored, with its 95 % CI; one recipe's files joined, "
                             "another recipe labelled by the hparams it changes; dashed, the published value.",)),
                       Image(f"{FIGURES}/{name}", f"{dataset}: accuracy against the length of the fit")]
        blocks += _reasons(here)
    curves, curve_figures = maml_curves_section(leaderboards)
    blocks += curves
    which = _which(compared)
    blocks += [Heading("Our rows"),
               Para(("The result file(s) of each row compared above (on the setting's ",
                     Link("leaderboard pages", "index"),
                     "); of several matching rows, one with the paper budget's hparams, then a whole fit, then the one "
                     "over the most seeds, then the newest, is compared.")),
               Table(which) if len(which) else Para(("None: no row of ours matches a published figure yet.",)),
               Heading("Sources"),
               Bullets(tuple((f"{s.short}: {s.title}. {s.venue}.",) for s in
                             dict.fromkeys(c.figure.source for c in compared)))]
    summary = (f"{len(compared)} published figures; {outside} outside our 95% CI at a budget; {missing} not run at "
               "either budget")
    return Built(summary, blocks, {**drawn, **curve_figures})
