"""Accuracy against the length of the fit, drawn from the files each budget reason of the reproduction page names.

A reason of kind ``budget`` (``published.toml``) names result files of shorter and longer fits, and the page
prints each one's accuracy. Here they are drawn, one small panel per published figure: each file at the length
of its fit (its iterations, or those of the saved fit it scored) against its accuracy on the first *n* test
episodes every file of the panel scored (episode *i* is drawn from its own seed, so these are the same
episodes; *n* is on the panel), with its 95 % CI, and the published value dashed. The files of one recipe (the
same method and hparams) are joined, so whether a recipe still rises with its fit, and how far it stays from
the published value, reads at a glance; another recipe is labelled with the hparams in which it differs from
the row's (by convention the last file a reason names). A file that scored other episodes, or fitted on other
data, is left out.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.ticker import FuncFormatter, NullFormatter

from mtbench.board.labels import hparams_as_ran
from mtbench.core.errors import UserError
from mtbench.core.metrics import mean_ci95
from mtbench.methods import METHODS
from mtbench.methods.hparams import defaults
from mtbench.report.evidence import result_or_none, same_episodes
from mtbench.report.published import Figure

COLUMNS = 3  # panels per row of a dataset's figure
#: the least distance between two labelled fit lengths, as a fraction of the panel's log10 span: at 7 pt, labels
#: like "1.6k" and "2k" overlap below it on a panel a third of the figure wide
TICK_GAP = 0.12
#: characters of a panel's title on one line: at 8 pt a longer one runs into the next panel's
TITLE_WIDTH = 40


@dataclass(frozen=True)
class Series:
    """One recipe's files: ``(fit length, accuracy %, 95 % CI half-width %)`` by length."""

    label: str
    points: tuple[tuple[int, float, float], ...]


@dataclass(frozen=True)
class Panel:
    title: str
    published: float  # %
    episodes: int  # the first n test episodes every point scored
    series: tuple[Series, ...]  # the row's recipe first


def _length(doc: dict[str, Any]) -> int:
    return doc["fit"]["iterations"] or (doc.get("init") or {}).get("iterations") or 0


def _recipe(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The method's name, with its variant as the leaderboard shows it (``maml (1st order)``), and the hparams of
    its fit and scoring as they ran, without those outside a recipe; an hparam a file predates ran as the method's
    default (or its ``later_hparams`` value) does now."""
    method = hparams_as_ran(doc["method"], doc["provenance"]["device_type"])
    variant = doc["method"].get("variant")
    name = method["name"] + (f" ({variant})" if variant else "")
    hparams = {**((doc.get("init") or {}).get("hparams") or {}), **method["hparams"]}
    try:
        cls = METHODS.get(method["name"])
    except UserError:  # a submitted method, not installed here
        return name, hparams
    return name, cls.recipe_hparams({**defaults(cls.Hparams), **cls.later_hparams, **hparams})


def panel(figure: Figure, repo: Path) -> Panel | None:
    """The figure's budget evidence as curves, or ``None`` where it holds fewer than two fit lengths. The row the
    panel is read against is the last file of the figure's first budget reason; files that fitted on other data
    (another copy or split) are left out, as they measure the data, not the budget."""
    budget = [r.files for r in figure.reasons if "budget" in r.cause]
    if not budget:
        return None
    paths = [p for p in dict.fromkeys(p for files in budget for p in files) if p != budget[0][-1]] + [budget[0][-1]]
    docs = [d for d in map(result_or_none, (repo / p for p in paths))
            if d is not None and d["protocol"].get("kind", "episodes") == "episodes"]
    if not docs:
        return None
    row = docs[-1]
    docs = [d for d in docs if same_episodes(d, row) and _length(d)
            and (d["dataset"], d.get("source")) == (row["dataset"], row.get("source"))]
    if len({_length(d) for d in docs}) < 2:
        return None
    n = min(len(d["accuracy"]["per_episode"]) for d in docs)
    _, row_hp = _recipe(row)
    groups: dict[str, list[tuple[int, float, float]]] = {}
    for doc in reversed(docs):  # the row's recipe first
        name, hp = _recipe(doc)
        differs = [f"{k}={hp.get(k, '-')}" for k in sorted(set(hp) | set(row_hp)) if hp.get(k) != row_hp.get(k)]
        label = name + (f": {', '.join(differs)}" if differs else ": the row's recipe")
        mean, ci = mean_ci95(doc["accuracy"]["per_episode"][:n])
        groups.setdefault(label, []).append((_length(doc), 100 * mean, 100 * ci))
    series = tuple(Series(label, tuple(sorted(points))) for label, points in groups.items())
    return Panel(f"{figure.setting} {figure.name}", figure.accuracy, n, series)


def panels(figures: list[Figure], repo: Path) -> list[Panel]:
    return [p for p in (panel(f, repo) for f in figures) if p is not None]


def spaced_ticks(lengths: list[int] | set[int]) -> list[int]:
    """The fit lengths to label on a log axis: each run length, ascending, less any that would sit closer than
    :data:`TICK_GAP` of the span to the one labelled before it; the longest fit is always labelled (in place
    of its too-close neighbour), so both ends of the curve are read off the axis."""
    xs = sorted(set(lengths))
    if len(xs) < 3:
        return xs
    gap = TICK_GAP * (math.log10(xs[-1]) - math.log10(xs[0]))
    kept = [xs[0]]
    for x in xs[1:]:
        if math.log10(x) - math.log10(kept[-1]) >= gap:
            kept.append(x)
    kept[-1] = xs[-1]  # the last one kept was the longest, or sits too close to it (never the shortest: a span apart)
    return kept


def length_label(x: float) -> str:
    """A fit length on the axis: thousands in short where that is exact to a hundred (``1.5k``, ``20k``), else in
    full (``1,473``: a fit stopped by the clock reads as run, not as ``1.473k``)."""
    n = round(x)
    return f"{n / 1000:g}k" if n >= 1000 and n % 100 == 0 else f"{n:,}"


def curves_figure(drawn: list[Panel]) -> Any:
    """``draw(fig)`` for :func:`mtbench.report.blocks.svg`: the panels in rows of :data:`COLUMNS`."""

    def draw(fig: Any) -> None:
        rows = -(-len(drawn) // COLUMNS)
        axes = fig.subplots(rows, COLUMNS, squeeze=False).ravel()
        for ax, p in zip(axes, drawn):
            ax.axhline(p.published, linestyle="--", color="black", linewidth=1, label="published")
            for s in p.series:
                ax.errorbar([x for x, _, _ in s.points], [m for _, m, _ in s.points],
                            yerr=[c for _, _, c in s.points], marker="o", markersize=3, capsize=2,
                            label=textwrap.fill(s.label, 60))  # a long recipe wraps under its own panel
            ax.set_xscale("log")
            ax.set_xticks(spaced_ticks({x for s in p.series for x, _, _ in s.points}))  # the fit lengths, as run
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: length_label(x)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.margins(x=0.15)
            ax.set_title(textwrap.fill(f"{p.title} ({p.episodes} episodes)", TITLE_WIDTH), fontsize=8)
            ax.set_xlabel("fit iterations", fontsize=7)
            ax.set_ylabel("accuracy (%)", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(frameon=False, fontsize=5, loc="upper center", bbox_to_anchor=(0.5, -0.3))
        for ax in axes[len(drawn):]:
            ax.set_visible(False)
        fig.subplots_adjust(hspace=1.5, wspace=0.35)

    return draw


def figure_size(count: int) -> tuple[float, float]:
    """Inches: three panels a row, each row with room below for its legends."""
    return 10.0, 3.5 * -(-count // COLUMNS)
