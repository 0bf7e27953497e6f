"""Where results live in a leaderboard folder: the one place that knows its layout.

A leaderboard folder holds ``<dataset>/<setting>/<result>.json`` (``setting`` as
:func:`mtbench.results.setting_name` spells it: ``5w1s``, ``transfer200-50``), and the
``mtbench bench`` files apart in ``throughput/``, which are measurements, not results.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mtbench.core.errors import UserError

THROUGHPUT = "throughput"  # the folder of a leaderboard that holds `mtbench bench` files
REPRODUCTION = "reproduction"  # the folder of `mtbench bench --maml-curves` files (the reproduction page's)
NOT_RESULTS = (THROUGHPUT, REPRODUCTION)  # folders of bench files, not results


def folder(root: str | Path, dataset: str, setting: str) -> Path:
    """The folder of one setting's results: ``<root>/<dataset>/<setting>``."""
    return Path(root) / dataset / setting


def throughput_folder(root: str | Path) -> Path:
    """The folder of the ``mtbench bench`` files: ``<root>/throughput``."""
    return Path(root) / THROUGHPUT


def leaderboard_files(root: str | Path) -> list[Path]:
    """The result files of a leaderboard folder, exactly as laid out (``<dataset>/<setting>/*.json``), sorted."""
    return sorted(p for p in Path(root).glob("*/*/*.json") if p.parts[-3] not in NOT_RESULTS)


def folders(root: str | Path) -> list[tuple[str, str]]:
    """The (dataset, setting) folders of a leaderboard folder that hold result files, sorted."""
    return sorted({(p.parts[-3], p.parts[-2]) for p in leaderboard_files(root)})


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """The result JSON files under ``paths`` (files, or folders searched recursively; ``throughput/`` folders
    and ``reproduction/`` folders hold benchmark files, not results, and are skipped)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(f for f in path.rglob("*.json") if not set(NOT_RESULTS) & set(f.relative_to(path).parts))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist; give result files or folders that hold them")
    return found
