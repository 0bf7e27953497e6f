"""The reproduction page's figure per dataset: every published accuracy beside our rows, so that the gaps read at a
glance before the table gives their numbers and reasons.

One line per published figure (setting and method); on it the published value (a black cross) and our row at the
quick and the paper budget (mean with its 95 % CI as a bar; a partial paper fit drawn hollow). A row of ours that
is not run is simply absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: how each budget is drawn: colour and marker (a partial paper-budget fit: the same marker, hollow)
STYLE = {"quick": ("tab:blue", "o"), "paper": ("tab:orange", "s")}


@dataclass(frozen=True)
class Point:
    """Our row at one budget, in %: its mean, the half-width of its 95 % CI, and whether its fit is partial."""

    mean: float
    ci95: float
    partial: bool = False


@dataclass(frozen=True)
class Line:
    """One published figure: its name on the axis, the published value (%) and our rows by budget."""

    name: str
    published: float
    ours: dict[str, Point]


def gap_figure(dataset: str, lines: list[Line]) -> Any:
    """``draw(fig)`` for :func:`mtbench.report.blocks.svg`: published against ours, one line per figure, the first
    figure at the top."""

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ys = range(len(lines))[::-1]  # the table's first row at the top
        ax.scatter([l.published for l in lines], ys, marker="x", color="black", zorder=3, label="published")
        for k, (budget, (colour, marker)) in enumerate(STYLE.items()):
            shift = 0.15 * (1 - 2 * k)  # quick just above the published value's line, paper just below
            for partial in (False, True):
                drawn = [(y, l.ours[budget]) for y, l in zip(ys, lines)
                         if budget in l.ours and l.ours[budget].partial == partial]
                if not drawn:
                    continue
                ax.errorbar([p.mean for _, p in drawn], [y + shift for y, _ in drawn],
                            xerr=[p.ci95 for _, p in drawn], fmt=marker, color=colour, capsize=2, markersize=4,
                            markerfacecolor="none" if partial else colour,
                            label=f"ours, {budget} budget" + (" (partial fit)" if partial else "") + ", 95% CI")
        ax.set_yticks(list(ys), [l.name for l in lines], fontsize=7)
        ax.set_ylim(-0.7, len(lines) - 0.3)
        ax.set_xlabel("accuracy (%)")
        ax.set_title(f"{dataset}: published accuracy and ours")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside: no point hidden

    return draw


def figure_size(lines: int) -> tuple[float, float]:
    """Inches: a fixed width, a height that gives each line room for its label."""
    return 5.5, 1.2 + 0.28 * lines
