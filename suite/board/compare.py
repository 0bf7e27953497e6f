"""Side-by-side tables of result files: methods ranked on the very same episodes or transfer trials.

Results are grouped as the leaderboard groups them (dataset, setting, ``episodes_sha``, schema
version): only results scored on identical draws are ranked together, the results of one configuration that
differ only by their training seed make one row (mean over the seeds, CI with the variance between them),
and each row shows its paired difference to the best of its group, which is what says whether two methods
differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from mtbench.core.errors import UserError
from mtbench.results.screen import Screened, screen


def collect(paths: Iterable[str | Path]) -> Screened:
    """Result files under ``paths`` (files or folders, searched recursively), screened as every board screens them
    (:func:`mtbench.results.screen.screen`): the valid ones, each run once, and the files left out with why."""
    from mtbench.results.layout import result_files

    found = result_files(paths)
    if not found:
        raise UserError(f"no result files (*.json) under {', '.join(map(str, paths))}")
    return screen(found)


def tables(screened: Screened) -> list[tuple[str, pd.DataFrame]]:
    """One ranked table per set of shared draws (see :mod:`mtbench.board.leaderboard`), with a title each."""
    from mtbench.board.leaderboard import frame, group

    return [(g.title, frame(g)) for g in group(screened.results)]


def render(screened: Screened, fmt: str = "text") -> str:
    """All tables as text (aligned columns) or Markdown, as ``mtbench leaderboard`` prints them, with the legend,
    then the files left out; a :class:`UserError` when none is left to show."""
    from mtbench.board.leaderboard import group
    from mtbench.board.text import render_groups

    if not screened.results:
        raise UserError("no valid result to compare: " + "; ".join(f"{x.path}: {x.reason}" for x in screened.left_out))
    return render_groups(group(screened.results), screened.left_out, fmt=fmt)
