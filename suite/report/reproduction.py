"""The report's reproduction page: published accuracies beside our leaderboard rows of the same setting.

The published figures are data, in ``<leaderboards>/published.toml`` (:data:`PUBLISHED`): each with its
source (authors, year, venue, table), the leaderboard label (and hparams) of the row of ours it is
compared with, and optionally the *measured* reasons why our interval misses it, each naming the
result files or report pages that measured it. The file lives in the leaderboard folder because a
report is made from that folder alone; without it the page is not written.

For each figure the page shows our row at the quick and at the paper budget (never mixed): mean ±
95 % CI, in %, and the number of training seeds the leaderboard row averages; the difference to the
published value; and whether the published value lies inside our interval. A figure outside it shows
its recorded reason, or "gap not yet explained": a reason is never assumed. The figures outside our
interval are listed first.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import pandas as pd

from mtbench.board import leaderboard as lb
from mtbench.board.labels import label, off_paper_recipe, partial_first_stage
from mtbench.core.errors import UserError
from mtbench.results import partial_fit
from mtbench.report.blocks import FIGURES, Block, Built, Bullets, Code, Heading, Image, Link, Para, Table, slugs, svg
from mtbench.report.evidence import describe
from mtbench.report.maml_curves import maml_curves_section
from mtbench.report.reproduction_figure import Line, Point, figure_size, gap_figure

PUBLISHED = "published.toml"  # in the leaderboard folder
BUDGETS = ("quick", "paper")  # the columns; a row of any other budget is not compared
UNEXPLAINED = "gap not yet explained"


# -- the published figures -------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    key: str
    authors: str
    title: str
    venue: str
    year: int | None

    @property
    def short(self) -> str:
        return f"{self.authors} {self.year}" if self.year else self.authors


@dataclass(frozen=True)
class Reason:
    """Why our interval misses a published value, as measured: ``evidence`` are repository paths."""

    text: str
    evidence: tuple[str, ...]
    budget: str | None  # the column it explains; None: both
    explains: bool = True  # False: measured, and found not to be the cause (the gap stays unexplained)


@dataclass(frozen=True)
class Figure:
    dataset: str
    setting: str
    name: str
    ours: str  # the leaderboard label of our row
    hp: tuple[tuple[str, Any], ...]
    accuracy: float  # %
    approximate: bool
    source: Source
    table: str
    note: str
    reasons: tuple[Reason, ...]

    @property
    def published(self) -> str:
        return f"{'≈ ' * self.approximate}{self.accuracy:g}"

    @property
    def cited(self) -> str:
        return self.source.short + (f", {self.table}" if self.table else "")

    @property
    def matches(self) -> str:
        """Our row as a reader finds it on the leaderboard: its label and the hparams it must have."""
        return self.ours + "".join(f" --hp {k}={_text(v)}" for k, v in self.hp)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _fields(where: str, table: Any, required: Mapping[str, type | tuple[type, ...]],
            optional: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table of keys, got {table!r}")
    unknown = sorted(set(table) - set(required) - set(optional))
    missing = [k for k in required if k not in table]
    if unknown or missing:
        raise UserError(f"{where}: " + "; ".join(
            ([f"unknown key(s) {', '.join(unknown)} (it takes {', '.join([*required, *optional])})"] if unknown else [])
            + ([f"missing {', '.join(missing)}"] if missing else [])))
    for key, kind in {**required, **optional}.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        value = table.get(key)
        if key in table and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
            raise UserError(f"{where}.{key}: {value!r} is not {' or '.join(k.__name__ for k in kinds)}")
    return table


def _reason(where: str, table: Any, repo: Path) -> Reason:
    r = _fields(where, table, {"text": str, "evidence": list}, {"budget": str, "explains": bool})
    if not r["text"].strip():
        raise UserError(f"{where}.text is empty; say what was measured")
    if not r["evidence"] or not all(isinstance(p, str) and p for p in r["evidence"]):
        raise UserError(f"{where}.evidence: give the path(s) of the result files or report pages that measured it")
    for path in r["evidence"]:
        if not (repo / path).exists():
            raise UserError(f"{where}.evidence: {path} does not exist under {repo}; a reason names what measured it")
    if r.get("budget", "quick") not in BUDGETS:
        raise UserError(f"{where}.budget: {r['budget']!r} is not one of {', '.join(BUDGETS)} (or leave it out)")
    return Reason(r["text"], describe(r["evidence"], repo), r.get("budget"), r.get("explains", True))


def _why(reasons: list[Reason] | tuple[Reason, ...], with_budget: bool = False) -> str:
    """The reasons that explain a gap, each with its evidence, else :data:`UNEXPLAINED`; then what was measured
    and found not to be the cause."""
    def said(r: Reason) -> str:
        return f"{f'{r.budget}: ' if with_budget and r.budget else ''}{r.text} (measured in {', '.join(r.evidence)})"

    given = "; ".join(said(r) for r in reasons if r.explains) or UNEXPLAINED
    ruled_out = "; ".join(said(r) for r in reasons if not r.explains)
    return given + (f"; measured, not the cause: {ruled_out}" if ruled_out else "")


def parse(doc: dict[str, Any], where: str, repo: Path) -> list[Figure]:
    """The figures of a published-figures document (read from ``where``); evidence paths resolve under ``repo``."""
    _fields(where, doc, {"sources": dict, "figures": list}, {})
    sources = {}
    for key, s in doc["sources"].items():
        s = _fields(f"{where}: sources.{key}", s, {"authors": str, "title": str, "venue": str}, {"year": int})
        sources[key] = Source(key, s["authors"], s["title"], s["venue"], s.get("year"))
    figures = []
    for i, f in enumerate(doc["figures"]):
        at = f"{where}: figures[{i}]"
        f = _fields(at, f, {"dataset": str, "setting": str, "name": str, "ours": str, "accuracy": (int, float),
                            "source": str},
                    {"hp": dict, "approximate": bool, "table": str, "note": str, "reasons": list})
        if f["source"] not in sources:
            raise UserError(f"{at}.source: no source {f['source']!r} in [sources] (it has {', '.join(sources)})")
        if not 0 <= f["accuracy"] <= 100:
            raise UserError(f"{at}.accuracy: {f['accuracy']} is not a percentage (0 to 100)")
        figures.append(Figure(f["dataset"], f["setting"], f["name"], f["ours"], tuple(sorted(f.get("hp", {}).items())),
                              float(f["accuracy"]), f.get("approximate", False), sources[f["source"]],
                              f.get("table", ""), f.get("note", ""),
                              tuple(_reason(f"{at}.reasons[{j}]", r, repo)
                                    for j, r in enumerate(f.get("reasons", [])))))
    return figures


def load(leaderboards: Path) -> list[Figure] | None:
    """The figures of ``<leaderboards>/published.toml``, or ``None`` when there is no such file; evidence paths
    resolve from the folder above the leaderboard folder (the repository root)."""
    path = Path(leaderboards) / PUBLISHED
    if not path.is_file():
        return None
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    return parse(doc, str(path), Path(leaderboards).resolve().parent)


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

    def inside(self, published: float) -> bool:
        return self.mean - self.ci95 <= published / 100 <= self.mean + self.ci95

    def shown(self, unit: str = "") -> str:
        """``mean ± CI`` in %, and the number of training seeds of the row (and how far a partial fit got)."""
        part = f"; partial fit, {self.partial[0]} of {self.partial[1]} iterations" if self.partial else ""
        if self.off_recipe:
            part += "; not --budget paper's hparams: " + ", ".join(f"{k}={a} (paper: {b})" for k, a, b in self.off_recipe)
        seeds = f"{self.seeds} seed{'s' * (self.seeds != 1)}"
        return f"{100 * self.mean:.2f} ± {100 * self.ci95:.2f}{unit} ({seeds}{part})"


def _budget(doc: dict[str, Any]) -> str:
    """The budget a row was fitted at: a pipeline's own when it trains, else its first stage's (``reptile →
    reptile-transductive`` adapts a quick Reptile fit with ``--budget 0``)."""
    if doc["budget"]["iterations"] == 0 and doc["init"]:
        return doc["init"]["budget"]
    return doc["budget"]["name"]


def rows(leaderboards: Path) -> dict[tuple[str, str], list[Ours]]:
    """Our rows per (dataset, setting): the leaderboard's groups, rows joined across CPUs (``joined_across_cpus``)."""
    found: dict[tuple[str, str], list[Ours]] = {}
    for g in lb.board(leaderboards).groups:
        ran_on = {e.path: lb.device(e.doc) for r in g.rows for e in r.entries}
        for r in lb.joined_across_cpus(g.rows):
            doc = r.doc  # over its training seeds: the mean and seed-aware CI, as a leaderboard row's
            found.setdefault((g.dataset, g.setting), []).append(Ours(
                label(doc), doc["method"]["hparams"], _budget(doc), r.accuracy.mean, r.accuracy.ci95, len(r.entries),
                tuple(e.path.name for e in r.entries), "; ".join(dict.fromkeys(ran_on[e.path] for e in r.entries)),
                max(e.doc["provenance"]["timestamp"] for e in r.entries),
                (doc["fit"]["iterations"], doc["budget"]["iterations"]) if partial_fit(doc)
                else partial_first_stage(doc), tuple((k, *d) for k, d in off_paper_recipe(doc).items())))
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
        """The recorded reasons (each with its evidence), else, when outside, that the gap is not explained."""
        if self.figure.reasons:
            return _why(self.figure.reasons, with_budget=True)
        return UNEXPLAINED if self.outside() else "-"


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


def _summary(compared: list[Compared]) -> list[Block]:
    outside = [(c, b) for c in compared for b in c.outside()]
    run = {b: sum(c.ours[b][0] is not None for c in compared) for b in BUDGETS}
    partial = sum(c.ours["paper"][0] is not None and c.ours["paper"][0].partial is not None for c in compared)
    partly = f" ({partial} of them partial fits, stopped part-way through the paper's schedule)" if partial else ""
    head = Para((f"{len(compared)} published figures; a row of ours at the quick budget for {run['quick']}, at the "
                 f"paper budget for {run['paper']}{partly}. The published value lies outside our 95 % CI in "
                 f"{len(outside)} of these {run['quick'] + run['paper']} comparisons" + (":" if outside else "."),))
    items = []
    for c, b in outside:
        o, f = c.ours[b][0], c.figure
        reasons = [r for r in f.reasons if r.budget in (None, b)]
        why = _why(reasons)
        line = (f"{f.dataset} {f.setting}, {f.name} ({f.cited}; ours: {f.matches}): published {f.published} %, "
                f"ours at the {b} budget {o.shown(' %')}, {100 * o.mean - f.accuracy:+.2f} points: {why}")
        items.append((line,))
    return [head, *([Bullets(tuple(items))] if items else [])]


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
              "averages (its CI includes their spread when there are several; here seeds join whatever CPU ran "
              "them, which a leaderboard keeps apart for its timings). Δ: ours minus published, in points. "
              "inside: whether the published value lies in our interval. gap: the measured reason recorded for a "
              "published value outside it, with the files that measured it, or \"" + UNEXPLAINED + "\". A budget "
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
        blocks += [Heading(dataset), Image(f"{FIGURES}/{name}", f"{dataset}: each published accuracy and our rows"),
                   Table(_table(here)), *_others(dataset, here, ours)]
        notes = dict.fromkeys(f"{c.figure.setting} {c.figure.name}: {c.figure.note}" for c in here if c.figure.note)
        blocks += [Para(("Notes:",)), Bullets(tuple((n,) for n in notes))] if notes else []
    curves, curve_figures = maml_curves_section(leaderboards)
    blocks += curves
    which = _which(compared)
    blocks += [Heading("Our rows"),
               Para(("The result file(s) of each row compared above (on the setting's ",
                     Link("leaderboard pages", "index"),
                     "); of several matching rows, one with the paper budget's hparams, then a whole fit, then the one over "
                     "the most seeds, then the newest, is compared.")),
               Table(which) if len(which) else Para(("None: no row of ours matches a published figure yet.",)),
               Heading("Sources"),
               Bullets(tuple((f"{s.short}: {s.title}. {s.venue}.",) for s in
                             dict.fromkeys(c.figure.source for c in compared)))]
    summary = (f"{len(compared)} published figures; {outside} outside our 95% CI at a budget; {missing} not run at "
               "either budget")
    return Built(summary, blocks, {**drawn, **curve_figures})
