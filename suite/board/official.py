"""The official leaderboard: which runs fill it, and the one command that (re)runs what is missing.

Every row of ``leaderboards/`` that the official plan names is produced by ``mtbench official``,
which calls ``mtbench run`` once per missing (setting, entry) and writes the result straight into
``leaderboards/<dataset>/<setting>/``. A row counts as present when a valid result there has the
entry's label (see :func:`mtbench.board.compare.label`) and budget, on any device: a GPU row, where one
was lent, stands for the setting; otherwise the quick budget's CPU row does, and the leaderboard
says which device each row ran on. The command is resumable and prints what it would run with
``--dry-run``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mtbench.core.errors import UserError


@dataclass(frozen=True)
class Entry:
    """One row: ``label`` is what the leaderboard calls it (``compare.label`` of its result)."""

    label: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Setting:
    """A dataset and protocol with the runs that fill its table."""

    dataset: str
    name: str  # the folder, as result file names spell it: 5w1s, transfer200-50
    args: tuple[str, ...]
    entries: tuple[Entry, ...] = field(default=())


def _few_shot() -> tuple[Entry, ...]:
    """The methods that apply to any few-shot or transfer setting, cheapest fits first (rows fill in that
    order). DANN needs unlabelled target images, which only a domain-shift dataset provides (elsewhere it
    would train on the source alone): it has the omniglot-shift setting, against its source-only reference."""
    return (
        Entry("protonet", ("--method", "protonet")),
        Entry("matchingnet", ("--method", "matchingnet")),
        Entry("feature-extract", ("--method", "feature-extract")),
        Entry("finetune", ("--method", "finetune")),
        Entry("maml", ("--method", "maml")),
        Entry("maml (1st order)", ("--method", "maml", "--hp", "first_order=true")),
        Entry("scratch", ("--method", "scratch")),
        Entry("reptile", ("--method", "reptile")),
    )


def _omniglot(ways: int, shots: int) -> Setting:
    return Setting("omniglot", f"{ways}w{shots}s", ("--dataset", "omniglot", "--ways", str(ways), "--shots", str(shots)),
                   _few_shot())


def _mini(ways: int, shots: int) -> Setting:
    return Setting("miniimagenet", f"{ways}w{shots}s",
                   ("--dataset", "miniimagenet", "--ways", str(ways), "--shots", str(shots)), _few_shot())


BUDGET = "quick"
PLAN: tuple[Setting, ...] = (
    _omniglot(5, 1), _omniglot(5, 5), _omniglot(20, 1), _mini(5, 1), _mini(5, 5),
    Setting("xray", "transfer200-50", ("--dataset", "xray", "--train-images", "200", "--test-images", "50"),
            _few_shot()),
    Setting("omniglot-shift", "5w1s", ("--dataset", "omniglot-shift", "--ways", "5", "--shots", "1"),
            (Entry("dann", ("--method", "dann")), Entry("source-only", ("--method", "source-only")))),
)


def settings(dataset: str | None = None, name: str | None = None) -> list[Setting]:
    """The plan's settings, optionally one dataset's or one setting's; a name outside the plan is an error."""
    chosen = [s for s in PLAN if dataset in (None, s.dataset) and name in (None, s.name)]
    if not chosen:
        known = ", ".join(f"{s.dataset}/{s.name}" for s in PLAN)
        raise UserError(f"no official setting {dataset or '*'}/{name or '*'}; the plan has {known}")
    return chosen


def present(folder: Path) -> dict[str, Path]:
    """The labels of the valid quick-or-longer budget results in ``folder``, each with its newest file."""
    from mtbench.board.labels import label
    from mtbench.results import read_result

    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            doc = read_result(path)
        except UserError:
            continue
        if doc["budget"]["name"] == BUDGET and doc["init"] is None:
            found[label(doc)] = path
    return found


def missing(leaderboards: Path, chosen: list[Setting]) -> list[tuple[Setting, Entry]]:
    """The (setting, entry) pairs of ``chosen`` with no row yet: each method across all settings before the
    next method, in the plan's order (cheapest fits first), so that an interrupted fill covers every table."""
    todo = []
    for s, setting in enumerate(chosen):
        have = present(leaderboards / setting.dataset / setting.name)
        todo += [(e, s, setting, entry) for e, entry in enumerate(setting.entries) if entry.label not in have]
    return [(setting, entry) for _, _, setting, entry in sorted(todo, key=lambda t: t[:2])]


def command(setting: Setting, entry: Entry, leaderboards: Path, extra: tuple[str, ...]) -> list[str]:
    """The ``mtbench run`` command line of one row."""
    return ["mtbench", "run", *entry.args, *setting.args, "--budget", BUDGET,
            "--out", str(leaderboards / setting.dataset / setting.name), *extra]


def run_missing(leaderboards: Path, chosen: list[Setting], extra: tuple[str, ...], dry_run: bool,
                echo=print) -> int:
    """Run every missing row of ``chosen`` one after the other; a failed run is reported and skipped.
    Returns the number of runs that failed."""
    todo = missing(leaderboards, chosen)
    echo(f"{len(todo)} row(s) missing in {', '.join(f'{s.dataset}/{s.name}' for s in chosen)}")
    failed = 0
    for i, (setting, entry) in enumerate(todo, 1):
        argv = command(setting, entry, leaderboards, extra)
        echo(f"[{i}/{len(todo)}] {shlex.join(argv)}")
        if dry_run:
            continue
        start = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "mtbench", *argv[1:]])
        echo(f"[{i}/{len(todo)}] {'done' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - start:.0f} s")
        failed += code != 0
    return failed
