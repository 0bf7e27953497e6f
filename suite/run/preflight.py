"""Checks a run makes before the work, so that nothing it cannot finish is started.

:func:`resolve <mtbench.run.stages.resolve>` checks every path the run will write (``--out``,
``--save``) and bounds the evaluation's memory; :func:`load <mtbench.run.stages.load>` checks the
decoded-tensor cache folder, refuses a dataset copy whose structure differs from the official
release, and turns a permission error while reading the data into one line. A run's scores are
checked finite before they become a result.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mtbench.core.errors import UserError
from mtbench.data import Dataset
from mtbench.data.episodes import EpisodeSpec
from mtbench.data.protocols import TransferSpec

#: bytes of host memory one evaluation episode costs per image index (the index table, its copy for the
#: sha and on the device) and per episode (a tensor per drawn episode, per-episode accuracies, their JSON),
#: measured on the CPU at ~3.4 KiB for a 5-way 16-image episode
BYTES_PER_INDEX = 3 * 8
BYTES_PER_EPISODE = 2048
#: the share of the available memory the episodes may take
MEMORY_SHARE = 0.5


def writable(target: str | os.PathLike, what: str, *, folder: bool, fix: str) -> None:
    """Raise a :class:`UserError` unless ``target`` (a folder when ``folder``, else a file) can be written:
    its nearest existing ancestor is a folder in which a file can be created. Nothing is left behind."""
    path = Path(target).expanduser().absolute()
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{what} {target} is a file, not a folder; {fix}")
    if not folder:
        if path.is_dir():
            raise UserError(f"{what} {target} is a folder; give a file path, e.g. {Path(target) / 'fit.pt'}")
        path = path.parent
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {target} cannot be written: {probe} is a file, not a folder; {fix}")
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".mtbench-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"{what} {target} cannot be written: {probe} does not let a file be created "
                        f"({exc.strerror or exc}); {fix}") from None


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def episode_bytes(protocol: EpisodeSpec | TransferSpec) -> tuple[int, int]:
    """The evaluation's episodes (transfer: trials) and an estimate of the host memory each costs."""
    if isinstance(protocol, TransferSpec):
        return protocol.trials, (protocol.train_images + protocol.test_images) * BYTES_PER_INDEX + BYTES_PER_EPISODE
    return protocol.episodes, protocol.ways * protocol.per_class * BYTES_PER_INDEX + BYTES_PER_EPISODE


def check_memory(protocol: EpisodeSpec | TransferSpec, available: int | None = None) -> None:
    """Refuse an evaluation whose episodes would take more than :data:`MEMORY_SHARE` of the available memory."""
    available = available_memory() if available is None else available
    if not available:
        return
    count, each = episode_bytes(protocol)
    option = "--trials" if isinstance(protocol, TransferSpec) else "--episodes"
    if count * each > MEMORY_SHARE * available:
        most = int(MEMORY_SHARE * available // each)
        raise UserError(f"{option} {count} would need about {_size(count * each)} of memory for the episodes and "
                        f"their accuracies ({_size(each)} each), more than half of the {_size(available)} available; "
                        f"use {option} {most} or fewer (600 is the usual count)")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_structure(data: Dataset) -> None:
    """Refuse a copy of ``data`` that fails a structure check (:meth:`~mtbench.data.Dataset.structure_checks`):
    e.g. Omniglot with 5 of its 50 alphabets, which would run and be recorded as ``omniglot``."""
    failed = [c for c in data.structure_checks() if c.ok is False]
    if failed:
        where = ", ".join(str(p) for p in data.paths()) or str(data.root)
        raise UserError(f"the copy of {data.name} in {where} is incomplete: {'; '.join(c.detail for c in failed)}; "
                        f"a result on it would not be one on {data.name}: remove it and get a complete copy "
                        f"({data.how_to_get()}); `mtbench data verify {data.name}` lists every check")


@contextmanager
def readable_data(root: Path, cache_dir: Path) -> Iterator[None]:
    """Turn a permission error while the data under ``root`` is read, or its cache in ``cache_dir`` written,
    into one line naming the file and the fix."""
    try:
        yield
    except PermissionError as exc:
        name = Path(exc.filename) if exc.filename else root
        if cache_dir in (name, *name.parents):
            fix = "make the cache folder writable, or set MTBENCH_CACHE to a folder you can write"
        else:
            fix = f"make it readable (chmod -R u+rX {name}), or point --data-root / MTBENCH_DATA at a copy you can read"
        raise UserError(f"cannot access {name} ({exc.strerror or 'permission denied'}): {fix}") from None


def check_cache(data: Dataset) -> None:
    """Refuse to start decoding a dataset whose decoded tensors could not be cached (generated data has none)."""
    if data.paths():
        writable(data.cache_dir, "the decoded-tensor cache folder", folder=True,
                 fix="set MTBENCH_CACHE to a folder you can write")


def check_finite(scores: dict[str, Any], method: str) -> dict[str, Any]:
    """``scores`` (the evaluator's), unless an accuracy in them is not a finite number: that is an error,
    never a result."""
    acc = scores["accuracy"]
    values = [acc["mean"], acc["ci95"], *acc["per_episode"], *(s[k] for s in acc["by_step"] for k in ("mean", "ci95"))]
    bad = [v for v in values if not (isinstance(v, (int, float)) and math.isfinite(v))]
    if bad:
        raise UserError(f"{method} scored a non-finite accuracy ({bad[0]}) on the test episodes: the run is not "
                        f"recorded; check its hparams and its predictions (logits must be finite numbers)")
    return scores
