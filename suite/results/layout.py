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


def board_files(path: str | Path) -> list[Path]:
    """The result files a board ranks for a folder given to it: those :func:`result_files` finds under it (a
    leaderboard folder, one of its ``<dataset>`` or ``<dataset>/<setting>`` folders, or where ``mtbench run --out``
    wrote results). A folder without any, or a folder of bench files itself (``throughput/``, ``reproduction/``), is
    a :class:`UserError`."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; give a leaderboard folder, one of its <dataset> or "
                        f"<dataset>/<setting> folders, or a folder of result files")
    if path.resolve().name in NOT_RESULTS:  # "." too
        raise UserError(f"{path} holds `mtbench bench` files, not results (see reports/); give a leaderboard folder, "
                        f"or one of the folders of results inside it")
    found = result_files([path])
    if not found:
        raise UserError(f"{path} holds no result files (*.json); give a leaderboard folder, e.g. leaderboards")
    return found


def throughput_folder(root: str | Path) -> Path:
    """The folder of the ``mtbench bench`` files: ``<root>/throughput``."""
    return Path(root) / THROUGHPUT


def leaderboard_files(root: str | Path) -> list[Path]:
    """The result files of a leaderboard folder, exactly as laid out (``<dataset>/<setting>/*.json``), sorted."""
    return sorted(p for p in Path(root).glob("*/*/*.json") if not set(p.parts[-3:-1]) & set(NOT_RESULTS))


def folders(root: str | Path) -> list[tuple[str, str]]:
    """The (dataset, setting) folders of a leaderboard folder that hold result files, sorted."""
    return sorted({(p.parts[-3], p.parts[-2]) for p in leaderboard_files(root)})


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """The result JSON files under ``paths`` (files, or folders searched recursively; ``throughput/`` folders
    and ``reproduction/`` folders hold benchmark files, not results, and are skipped, as are hidden folders such
    as a ``.venv``)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(f for f in path.rglob("*.json")
                            if not any(part in NOT_RESULTS or part.startswith(".")
                                       for part in f.relative_to(path).parts[:-1]))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist; give result files or folders that hold them")
    return found
