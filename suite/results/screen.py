"""Result files as the boards read them (``leaderboard``, ``compare``, ``report``): only the files that pass
the checks ``mtbench validate`` makes on a file alone, each run once, and every other file listed with why.

A file is left out when it cannot be read (permissions, not JSON), fails the schema, or its figures do
not add up (:func:`mtbench.results.integrity.consistency`: an edited ``accuracy.mean`` is caught here).
The episode-sha check of ``validate`` needs the datasets and is not repeated: a result on other
draws is never ranked against the official ones anyway, it forms a table of its own. What a file
alone cannot prove (an edited ``git_commit`` or ``device``, or per-episode values forged together
with their mean) only re-running the result can.

Two files of the same run (:func:`run_identity`: a copy, or a re-run that scored exactly the same) are
shown once: the earliest by timestamp, then one named as ``mtbench run`` names its files, then by path; the
others are listed as its duplicates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtbench.results.integrity import file_problems
from mtbench.results.io import result_filename


@dataclass(frozen=True)
class LeftOut:
    """A file a board does not show, and why (in words that leave the path to the reader)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Screened:
    """The results a board shows (path and document, in the order given) and the files it leaves out."""

    results: list[tuple[Path, dict[str, Any]]]
    left_out: list[LeftOut] = field(default_factory=list)


def left_out_note(left_out: list[LeftOut], markdown: bool = False) -> str:
    """The left-out files, one line each (Markdown: a bullet list) after a heading line; empty when none."""
    if not left_out:
        return ""
    head = (f"Left out {len(left_out)} result file(s) that fail mtbench validate's checks of the file, cannot be "
            "read, or repeat a run shown above:")
    lines = [f"- `{x.path}`: {x.reason}" if markdown else f"  {x.path}: {x.reason}" for x in left_out]
    return "\n".join([head, *([""] if markdown else []), *lines])


def run_identity(doc: dict[str, Any]) -> str:
    """What makes two result files the same run: what ran (method and hparams, data, protocol and its draws,
    budget, fit seed, checkpoint, submitted file, precision, compilation) and every per-episode accuracy, not the
    file's name, time, timings or machine."""
    prov, init, sub = doc["provenance"], doc["init"], doc["submission"]
    key = {
        "method": doc["method"], "dataset": doc["dataset"], "source": doc["source"], "protocol": doc["protocol"],
        "budget": doc["budget"], "fit_seed": doc["fit"]["seed"], "init": init and init["sha256"],
        "submission": sub and sub["source_sha256"],
        "precision": prov.get("precision"), "compile": prov.get("compile"),
        "per_episode": doc["accuracy"]["per_episode"],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _named_by_mtbench(path: Path, doc: dict[str, Any]) -> bool:
    """Whether ``path`` has the name :func:`~mtbench.results.io.write_result` gives ``doc`` (or a numbered one)."""
    stem = Path(result_filename(doc)).stem
    return path.name == f"{stem}.json" or (path.name.startswith(f"{stem}.") and path.name[len(stem) + 1:-5].isdigit())


def screen(files: Iterable[Path]) -> Screened:
    """Read and check each of ``files``: the valid ones (duplicates once), and the rest with the reason."""
    valid: list[tuple[Path, dict[str, Any]]] = []
    left_out: list[LeftOut] = []
    for path in files:
        doc, problems = file_problems(path)
        if problems or doc is None:
            left_out.append(LeftOut(Path(path), "; ".join(problems)))
        else:
            valid.append((Path(path), doc))
    first: dict[str, Path] = {}
    def preference(r: tuple[Path, dict[str, Any]]) -> tuple[str, bool, str]:
        return r[1]["provenance"]["timestamp"], not _named_by_mtbench(*r), str(r[0])

    for path, doc in sorted(valid, key=preference):
        first.setdefault(run_identity(doc), path)
    shown = []
    for path, doc in valid:
        kept = first[run_identity(doc)]
        if kept == path:
            shown.append((path, doc))
        else:
            other = kept.name if kept.parent == path.parent else str(kept)
            left_out.append(LeftOut(path, f"the same run as {other} (what ran and every per-episode accuracy)"))
    return Screened(shown, sorted(left_out, key=lambda x: str(x.path)))
