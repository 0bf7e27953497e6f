"""``mtbench data``: list, verify, download and install the datasets under the data root.

The per-dataset knowledge (where its files are, how to get them, what a good copy looks like) lives
on the dataset classes (:meth:`~mtbench.data.Dataset.paths`, ``how_to_get``, ``download``,
``prepare_from``, ``verify``); this module resolves names and the data root, calls them, and
formats what they return as text for the command line. Every function returns the text to print
(and, for :func:`verify`, whether everything passed), so the CLI stays a thin shell.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mtbench.data import DATASETS, Dataset, VerifyReport, resolve_cache_dir, resolve_data_root
from mtbench.run.preflight import readable_data

MARKS = {True: "ok", False: "FAIL", None: "--"}


def root_and_source(given: str | os.PathLike | None) -> tuple[Path, str]:
    """The data root (see :func:`~mtbench.data.resolve_data_root`) and where it came from, in words."""
    root = resolve_data_root(given)
    if given:
        source = "--data-root"
    elif os.environ.get("MTBENCH_DATA"):
        source = "$MTBENCH_DATA"
    else:
        source = "the default; set --data-root or MTBENCH_DATA to use another folder"
    return root, source


def root_line(given: str | os.PathLike | None) -> str:
    root, source = root_and_source(given)
    missing = "" if root.is_dir() else ", does not exist yet"
    return f"data root: {root} ({source}{missing})"


def datasets(names: Sequence[str], root: Path, progress: bool = True) -> list[Dataset]:
    """Instances of the named datasets (all registered ones when ``names`` is empty), in order, once each.

    Every name is resolved before anything is done, so an unknown one is a :class:`UserError` up front.
    """
    classes = [DATASETS.get(n) for n in dict.fromkeys(names)] if names else [cls for _, cls in DATASETS.items()]
    return [cls(root=root, progress=progress) for cls in classes]


def where(data: Dataset) -> str:
    """The dataset's files relative to its data root (folders with a trailing ``/``), or ``(generated)``."""
    paths = data.paths()
    if not paths:
        return "(generated)"
    out = []
    for p in paths:
        try:
            text = str(p.relative_to(data.root))
        except ValueError:
            text = str(p)
        out.append(text + ("/" if p.is_dir() or not p.suffix else ""))
    return ", ".join(out)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Plain text columns, left-aligned, two spaces apart (the last column unpadded)."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in [list(headers), *rows]) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1]
                     for r in [list(headers), *rows])


def _missing_hints(items: list[tuple[Dataset, str]]) -> list[str]:
    missing = [d for d, status in items if status == "missing"]
    if not missing:
        return []
    width = max(len(d.name) for d in missing)
    return ["", "to get a missing dataset:", *(f"  {d.name:<{width}}  {d.how_to_get()}" for d in missing)]


# -- list -------------------------------------------------------------------------------------------
def list_text(given_root: str | os.PathLike | None) -> str:
    """The ``mtbench data list`` table: each dataset, found or missing, where, and how to get a missing one."""
    root, _ = root_and_source(given_root)
    items = [(d, "found" if d.is_available() else "missing") for d in datasets((), root, progress=False)]
    rows = [(d.name, status, where(d)) for d, status in items]
    lines = [root_line(given_root), "", table(("dataset", "status", "where"), rows), *_missing_hints(items)]
    lines += ["", "`mtbench data verify` checks the found ones (structure, counts and checksums)."]
    return "\n".join(lines)


# -- verify -----------------------------------------------------------------------------------------
def report_lines(report: VerifyReport) -> list[str]:
    """The checks and notes of one report, one line each, indented under the dataset's name."""
    head = f"{report.dataset}: {report.status}"
    if report.status == "missing":
        return [f"{head}: {report.how_to_get}"]
    width = max([len(c.what) for c in report.checks] + [4])
    lines = [head]
    lines += [f"  {MARKS[c.ok]:<4}  {c.what:<{width}}  {c.detail}" for c in report.checks]
    lines += [f"  {'note':<4}  {'':<{width}}  {n}" for n in report.notes]
    return lines


def verify(names: Sequence[str], given_root: str | os.PathLike | None, progress: bool = True) -> tuple[str, bool]:
    """``mtbench data verify [NAME...]``: the text to print, and whether it passed.

    It fails when a check fails, or when a dataset named on the command line is missing; without
    names, every registered dataset is looked at and a missing one is only reported.
    """
    root, _ = root_and_source(given_root)
    memo: dict = {}  # xray and xray3, omniglot-shift and its parts share one hashing of each folder
    with readable_data(root, resolve_cache_dir()):  # a folder without read access: one line naming it
        reports = [(d, d.verify(memo)) for d in datasets(names, root, progress)]
    rows = [(d.name, r.status, where(d)) for d, r in reports]
    lines = [root_line(given_root), "", table(("dataset", "status", "where"), rows), ""]
    for _, r in reports:
        lines += report_lines(r)
    bad = [r for _, r in reports if r.failed or (names and r.status == "missing")]
    counts = ", ".join(f"{n} {status}" for status in VerifyReport.STATUSES
                       if (n := sum(r.status == status for _, r in reports)))
    lines.append("")
    if bad:
        lines.append("verification FAILED for " + ", ".join(r.dataset + (" (missing)" if r.status == "missing" else "")
                                                           for r in bad)
                     + ("; the FAIL lines above say what and where" if any(r.failed for r in bad) else ""))
    else:
        lines.append(f"nothing failed: {counts}")
    return "\n".join(lines), not bad


# -- download and prepare -----------------------------------------------------------------------------
def download(name: str, given_root: str | os.PathLike | None, progress: bool = True) -> str:
    """``mtbench data download NAME``: fetch from the official URL (checksummed), or say why it cannot."""
    root, _ = root_and_source(given_root)
    (data,) = datasets((name,), root, progress)
    if not data.paths():
        return f"{name}: {data.how_to_get()}"
    if data.is_available():
        return (f"{name} is already in {', '.join(map(str, data.paths()))}: nothing to do "
                f"(`mtbench data verify {name}` checks it)")
    data.download()
    return f"{name}: downloaded, checksum-verified and installed as {', '.join(map(str, data.paths()))}"


def prepare(name: str, path: str | os.PathLike, given_root: str | os.PathLike | None, progress: bool = True) -> str:
    """``mtbench data prepare NAME --from PATH``: install a copy the user has, then verify it."""
    root, _ = root_and_source(given_root)
    (data,) = datasets((name,), root, progress)
    dest = data.prepare_from(path)
    report = data.verify({})
    return "\n".join([f"{name}: installed {path} as {dest}", *report_lines(report)])
