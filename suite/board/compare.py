"""Side-by-side tables of result files: methods ranked on the very same episodes or transfer trials.

Results are grouped as the leaderboard groups them (dataset, setting, ``episodes_sha``, schema
version): only results scored on identical draws are ranked together, and each row shows its paired
difference to the best of its group, which is what says whether two methods differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from mtbench.core.errors import UserError
from mtbench.results import read_result


def collect(paths: Iterable[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Result files under ``paths`` (files or folders, searched recursively), read and validated."""
    from mtbench.results.layout import result_files

    found = result_files(paths)
    if not found:
        raise UserError(f"no result files (*.json) under {', '.join(map(str, paths))}")
    return [(p, read_result(p)) for p in found]


def tables(results: list[tuple[Path, dict[str, Any]]]) -> list[tuple[str, pd.DataFrame]]:
    """One ranked table per set of shared draws (see :mod:`mtbench.board.leaderboard`), with a title each."""
    from mtbench.board.leaderboard import frame, group

    return [(g.title, frame(g)) for g in group(results)]


def _pipes(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(frame: pd.DataFrame, cell: Callable[[str], str] = _pipes) -> str:
    """A GitHub-flavoured Markdown table (without the optional ``tabulate`` dependency); ``cell`` escapes
    each header and cell (by default only ``|``, which would end the cell)."""
    cols = [cell(str(c)) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(str(v)) for v in row) + " |")
    return "\n".join(lines)


def render(results: list[tuple[Path, dict[str, Any]]], fmt: str = "text") -> str:
    """All tables as text (aligned columns) or Markdown, with the leaderboard's legend."""
    from mtbench.board.leaderboard import FRACTION, LEGEND

    parts = []
    for title, frame in tables(results):
        body = markdown(frame) if fmt == "markdown" else frame.to_string(index=False)
        parts.append(f"{'### ' if fmt == 'markdown' else ''}{title}\n\n{body}")
    return "\n\n".join(parts) + "\n\n" + LEGEND.format(f=FRACTION)
