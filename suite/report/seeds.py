"""The report's training-seed page: how far a new training seed moves a leaderboard row, and whether a ranking of
single fits could come out the other way round.

A single-seed row's ± is a 95 % CI over its test episodes: it says how well those episodes measured that one fit,
not what another training run would score. For every row over several training seeds
(:class:`mtbench.board.leaderboard.Row`), this page sets the seeds' own accuracies beside that CI: their spread
(highest minus lowest, on the same episodes) and standard deviation, a single fit's CI half-width (the mean of
the seeds'), whether the spread is wider than it (two fits of the row differ by more than the ± a single-seed row
shows), and the row's seed-aware CI. For every two rows of one group of which at least one has several seeds, it
counts the pairs of fits (a seed of each) that a comparison of single fits would rank the other way round from
the rows' means, beside the rows' paired difference with its seed-aware CI
(:func:`mtbench.board.leaderboard.paired`). A figure draws each seed's accuracy against its row's mean with the
fit's episode CI, over the row's seed-aware CI.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.ticker import NullFormatter

from mtbench.board import leaderboard as lb
from mtbench.board.labels import budget, distinct_labels
from mtbench.core.metrics import Z95, p_text, t_quantile
from mtbench.report.blocks import FIGURES, Block, Built, Code, Heading, Image, Para, Table, svg

FIGURE = "seeds-spread.svg"


@dataclass(frozen=True)
class Spread:
    """One row over several seeds: its group and rank, the name the group's pages give it, its seeds' accuracies
    (as fractions) and a single fit's 95 % CI half-width over the episodes (the mean of its seeds')."""

    group: lb.Group
    rank: int
    name: str
    row: lb.Row

    @property
    def accuracies(self) -> list[float]:
        return [e.doc["accuracy"]["mean"] for e in self.row.entries]

    @property
    def range(self) -> float:
        return max(self.accuracies) - min(self.accuracies)

    @property
    def fit_ci(self) -> float:
        return statistics.fmean(e.doc["accuracy"]["ci95"] for e in self.row.entries)

    @property
    def wider(self) -> bool:
        """Whether two of the row's fits differ by more than a single fit's CI half-width."""
        return self.range > self.fit_ci


@dataclass(frozen=True)
class Flip:
    """Two rows of one group, ``higher`` ranked above ``lower``: how many pairs of fits (a seed of each) score the
    other way round (strictly), of how many, and the rows' paired difference (higher minus lower)."""

    higher: Spread
    lower: Spread
    reversed: int
    pairs: int
    difference: tuple[float, float, float]


def _named(g: lb.Group) -> list[Spread]:
    names = distinct_labels([r.doc for r in g.rows])
    return [Spread(g, i, names[i - 1], r) for i, r in enumerate(g.rows, 1)]


def spreads(groups: list[lb.Group]) -> list[Spread]:
    """The rows over several seeds of ``groups``, group by group, in rank order."""
    return [s for g in groups for s in _named(g) if len(s.row.entries) > 1]


def pairs_of_rows(g: lb.Group) -> list[tuple[Spread, Spread]]:
    """Every two rows of ``g``, the higher ranked first, with at least two pairs of fits (one over several seeds)."""
    named = _named(g)
    return [(a, b) for i, a in enumerate(named) for b in named[i + 1:]
            if len(a.row.entries) * len(b.row.entries) > 1]


def flips(g: lb.Group) -> list[Flip]:
    """The :func:`pairs_of_rows` of ``g`` whose single fits rank them the other way round at least once."""
    out = []
    for a, b in pairs_of_rows(g):
        turned = sum(x < y for x in a.accuracies for y in b.accuracies)
        if turned:
            out.append(Flip(a, b, turned, len(a.accuracies) * len(b.accuracies), lb.paired(a.row, b.row)))
    return out


def _points(x: float) -> str:
    return f"{100 * x:.2f}"


def _spread_table(rows: list[Spread]) -> pd.DataFrame:
    return pd.DataFrame([{
        "rank": s.rank, "method": s.name, "budget": budget(s.row.doc), "fit seeds": ", ".join(map(str, s.row.seeds)),
        "accuracy of each fit": " / ".join(f"{a:.4f}" for a in s.accuracies),
        "spread (points)": _points(s.range), "SD (points)": _points(statistics.stdev(s.accuracies)),
        "a fit's 95% CI (points)": f"± {_points(s.fit_ci)}",
        "spread / a fit's CI": f"{s.range / s.fit_ci:.1f}" if s.fit_ci > 0 else "-",
        "row's 95% CI, seeds counted": f"{s.row.accuracy.mean:.4f} ± {s.row.accuracy.ci95:.4f}",
    } for s in rows])


def _by_method(rows: list[Spread]) -> pd.DataFrame:
    """A line per method name (as its tables name it) and budget: how far its fits spread over its rows with several
    seeds, least first."""
    named: dict[tuple[str, str], list[Spread]] = {}
    for s in rows:
        named.setdefault((s.name, s.row.doc["budget"]["name"]), []).append(s)
    out = []
    for (name, kind), mine in sorted(named.items(), key=lambda kv: statistics.median(s.range for s in kv[1])):
        most = max(mine, key=lambda s: s.range)
        out.append({"method": name, "budget": kind, "rows": len(mine),
                    "median spread (points)": _points(statistics.median(s.range for s in mine)),
                    "largest spread (points)": f"{_points(most.range)} ({most.group.dataset} {most.group.setting})",
                    "median spread / a fit's CI": f"{statistics.median(s.range / s.fit_ci for s in mine):.1f}"})
    return pd.DataFrame(out)


def _flip_table(found: list[Flip]) -> pd.DataFrame:
    def row(s: Spread) -> str:
        return f"{s.rank}. {s.name}, {budget(s.row.doc)} ({len(s.row.entries)} seed{'s' * (len(s.row.entries) > 1)})"

    out = []
    for f in found:
        mean, ci, p = f.difference
        out.append({"higher row": row(f.higher), "lower row": row(f.lower),
                    "difference (paired, seeds counted)": f"{mean:+.4f} ± {ci:.4f} ({p_text(p)})",
                    "pairs of fits ranked the other way": f"{f.reversed} of {f.pairs}"})
    return pd.DataFrame(out)


def _figure(rows: list[Spread]) -> tuple[Callable[[Any], None], tuple[float, float]]:
    labels = [f"{s.group.dataset} {s.group.setting}: {s.rank}. {s.name}, {budget(s.row.doc)}" for s in rows]

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        for i, s in enumerate(rows):
            ci = 100 * s.row.accuracy.ci95
            ax.plot([-ci, ci], [i, i], color="0.85", linewidth=7, solid_capstyle="butt", zorder=1)
            n, mean = len(s.accuracies), s.row.accuracy.mean
            for k, e in enumerate(s.row.entries):
                y = i + (k - (n - 1) / 2) * 0.22
                ax.errorbar(100 * (e.doc["accuracy"]["mean"] - mean), y, xerr=100 * e.doc["accuracy"]["ci95"],
                            fmt="o", markersize=4, capsize=2, color=f"C{k % 10}", zorder=2)
        ax.axvline(0, color="0.5", linewidth=0.8, zorder=0)
        # linear within a point of the mean, logarithmic beyond: a GAN-style fit's seeds spread tens of points,
        # a ProtoNet's a tenth of one
        ax.set_xscale("symlog", linthresh=1)
        ticks = [t for t in (-30, -10, -3, -1, 0, 1, 3, 10, 30) if abs(t) <= max(1.0, ax.get_xlim()[1])]
        ax.set_xticks(ticks, [f"{t:+g}" if t else "0" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlabel("a fit's accuracy minus its row's mean (points, linear within ±1, log beyond)\nbars: the fit's "
                      "95% CI over the episodes; grey: the row's 95% CI, seeds counted")
        ax.set_title("Each training seed of a row, against the row's mean (dots in order of fit seed)")
        ax.grid(axis="x", alpha=0.3)

    return draw, (9.0, 1.4 + 0.32 * len(rows))


def _settled(significant: int, flipped: int) -> str:
    """What the seed-aware paired differences say of the pairs of rows single fits could rank either way."""
    if not flipped:
        return ""
    if not significant:
        return ("None of those rows' paired differences, seeds counted, is significant at 5%: the leaderboard's "
                "seed-aware intervals leave each such order open. The pairs are listed under each table below.")
    return (f"In {significant} of them the rows' paired difference, seeds counted, is significant at 5%: the seeds "
            f"together settle an order that one fit of each could have shown reversed. The pairs are listed under "
            f"each table below.")


def seeds_page(leaderboards: Path) -> Built | None:
    """The page: a summary, the figure, then per group its rows over several seeds and the pairs of rows single
    fits could rank the other way round; ``None`` when no row has several seeds."""
    groups = lb.board(leaderboards).groups
    rows = spreads(groups)
    if not rows:
        return None
    wider = sum(s.wider for s in rows)
    total = sum(len(g.rows) for g in groups)
    considered = sum(len(pairs_of_rows(g)) for g in groups)
    turned = {id(g): flips(g) for g in groups}
    flipped = [f for fs in turned.values() for f in fs]
    significant = sum(f.difference[2] < 0.05 for f in flipped)
    ratios = [s.range / s.fit_ci for s in rows if s.fit_ci > 0]
    summary = (f"{len(rows)} rows over several training seeds; in {wider} two fits differ by more than a single "
               f"fit's 95% CI; single fits could rank {len(flipped)} of {considered} pairs of rows the other way round")
    blocks: list[Block] = [
        Para(("A single-seed row's ± is a 95% CI over its test episodes: how well the episodes measured that one "
              "fit, not what another training run of the same recipe would score. Here every leaderboard row over "
              "several training seeds (", Code("mtbench run --fit-seed N"), ", ", Code("mtbench official --fit-seeds "
              "0,1,2"), ") sets its seeds' accuracies, scored on the same test episodes, beside that CI: the spread "
              "(highest minus lowest fit) and standard deviation of the fits, a single fit's CI half-width (the mean "
              "of the fits'), their ratio, and the row's CI once the variance between seeds is counted (the "
              "leaderboard's; see the README's rows over training seeds). All in accuracy points. Two seeds estimate "
              "the variance between seeds with one degree of freedom, so a two-seed row's CI is wide by construction "
              f"(its seed part takes Student's t at 1 degree of freedom, {t_quantile(0.975, 1):.1f} where the "
              f"normal's is {Z95:.2f}); a third seed narrows it most ({t_quantile(0.975, 2):.1f}).",)),
        Para((f"{len(rows)} of the {total} leaderboard rows have several seeds. In {wider} of them two fits differ "
              f"by more than a single fit's CI half-width: their single-seed rows would have claimed a precision a "
              f"reseed does not keep. The spread is {statistics.median(ratios):.1f} times a fit's CI half-width at "
              f"the median (from {min(ratios):.1f} to {max(ratios):.1f}).",)),
        Para((f"Of the {considered} pairs of rows in one table of which at least one has several seeds, single "
              f"fits (a seed of each) would rank {len(flipped)} the other way round from the rows' means for some "
              f"choice of seeds. {_settled(significant, len(flipped))}",)),
        Image(f"{FIGURES}/{FIGURE}", "each seed's accuracy against its row's mean, with the fit's episode CI and "
                                     "the row's seed-aware CI"),
        Heading("By method"),
        Para(("How far each method's fits spread over its rows with several seeds (each row's highest minus lowest "
              "fit), by budget, least first: the methods whose single fit says least about the next one are at the "
              "bottom. A method's name is as its settings' tables give it.",)),
        Table(_by_method(rows)),
    ]
    for g in groups:
        mine = [s for s in rows if s.group is g]
        if not mine:
            continue
        blocks += [Heading(g.title), Table(_spread_table(mine))]
        if turned[id(g)]:
            blocks += [Para(("Pairs of rows whose single fits could rank them the other way round (rank and name "
                             "as on the setting's page; * = the rows' paired difference is significant at 5%):",)),
                       Table(_flip_table(turned[id(g)]))]
        else:
            blocks.append(Para(("No two rows of this table would be ranked the other way round by any choice of "
                                "single fits.",)))
    return Built(summary, blocks, {FIGURE: svg(*_figure(rows))})
