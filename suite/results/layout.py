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
    """The result files of a folder given to a board: a leaderboard folder (``<dataset>/<setting>/*.json``), one
    of its ``<dataset>`` folders (``<setting>/*.json``), or a folder of results itself (``*.json``: a
    ``<dataset>/<setting>`` folder, or where ``mtbench run --out`` wrote them), sorted. A folder with none of these,
    ``throughput/`` (``mtbench bench`` files) and ``reproduction/`` (leaderboard folders one level down) are a
    :class:`UserError`."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; give a leaderboard folder, one of its <dataset> or "
                        f"<dataset>/<setting> folders, or a folder of result files")
    name = path.resolve().name  # "." too
    if name == THROUGHPUT:
        raise UserError(f"{path} holds `mtbench bench` files, not results: see reports/throughput.md, or give a "
                        f"leaderboard folder")
    if name == REPRODUCTION:  # bench files of its own, and leaderboard folders of measurements below
        inner = sorted(str(d) for d in path.iterdir() if d.is_dir() and leaderboard_files(d))
        raise UserError(f"{path} holds the reproduction page's measurements in leaderboard folders of their own: "
                        f"give one of {', '.join(inner) or 'them'}")
    for found in (sorted(path.glob("*.json")), leaderboard_files(path),
                  sorted(p for p in path.glob("*/*.json") if p.parts[-2] not in NOT_RESULTS
                         and not p.parts[-2].startswith("."))):
        if found:
            return found
    raise UserError(f"{path} has no result files (*.json) in it, nor laid out as <setting>/*.json or "
                    f"<dataset>/<setting>/*.json; give a leaderboard folder, e.g. leaderboards")


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
