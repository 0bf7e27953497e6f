"""The leaderboard as a terminal shows it (``mtbench leaderboard`` and ``mtbench compare``): each group's table as
aligned text or Markdown, the legend, and the files left out."""

from __future__ import annotations

import textwrap

from mtbench.board.leaderboard import FRACTION, LEGEND, Board, Group, frame, markdown
from mtbench.results.screen import LeftOut, left_out_note

# the text table's columns of words, left-aligned (the others hold numbers and are right-aligned)
WORDS = ("method", "seeds × episodes", "vs best (paired)", "device", "budget", "reproduced")


def aligned(g: Group, fraction: float = FRACTION) -> str:
    """The group's table as text for a terminal, words left-aligned and numbers right-aligned; its files follow
    it by rank, one per line (a column of a three-seed row's names made the table 1,400 characters wide)."""
    table = frame(g, fraction).drop(columns=["file"])
    cols = list(table.columns)
    cells = [[str(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if c in WORDS else v.rjust(w) for c, v, w in zip(cols, values, widths)).rstrip()

    files = ["rank  file"]
    for rank, row in enumerate(g.rows, 1):
        files += [f"{rank if i == 0 else '':>4}  {e.path.name}" for i, e in enumerate(row.entries)]
    return "\n".join([line(cols), *map(line, cells), "", *files])


def render(groups: list[Group], fraction: float = FRACTION) -> str:
    """Every group's table as aligned text, with its title, its files and the legend."""
    parts = [f"{g.title}\n\n{aligned(g, fraction)}" for g in groups]
    return "\n\n".join(parts) + "\n\n" + textwrap.fill(LEGEND.format(f=fraction), 110, break_on_hyphens=False)


def render_board(b: Board, fraction: float = FRACTION, fmt: str = "text") -> str:
    """The board as ``mtbench leaderboard`` prints it (see :func:`render_groups`)."""
    return render_groups(b.groups, b.left_out, fraction, fmt)


def render_groups(groups: list[Group], left_out: list[LeftOut], fraction: float = FRACTION, fmt: str = "text") -> str:
    """Every group's table (aligned text or Markdown), the legend, then the files left out, with why: what
    ``mtbench leaderboard`` and ``mtbench compare`` print."""
    if fmt == "markdown":
        text = "\n\n".join(f"### {g.title}\n\n{markdown(frame(g, fraction))}" for g in groups) \
            + "\n\n" + LEGEND.format(f=fraction)
    else:
        text = render(groups, fraction)
    note = left_out_note(left_out, markdown=fmt == "markdown")
    return text + (f"\n\n{note}" if note else "")
