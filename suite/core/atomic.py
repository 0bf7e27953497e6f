"""Atomic file writes: a temp file beside the target, then a rename; readers never see half a file.

Temp files are named ``.<target>.mtbench-<host>-<pid>-<random>.tmp``: a write removes its own temp
file on every exit path Python sees (an exception, Ctrl-C, a SIGTERM the CLI turns into one), and
the temp files of processes that died without that chance (SIGKILL, a power cut) are swept from a
folder the next time anything is written into it. Only a temp file of this host whose process is
gone is swept, so a write in progress in another process is never touched.

Every completed write is recorded (:func:`completed`), so that an interrupted command can say exactly
what it had written: a checkpoint, a result, or nothing.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

TAG = "mtbench"
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(rf"^\..+\.{TAG}-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")


@dataclass(frozen=True)
class Written:
    """A file this process completed: ``what`` it is (``checkpoint``, ``result``; ``file`` when not said)."""

    what: str
    path: Path


_completed: list[Written] = []


def completed() -> list[Written]:
    """Every file this process has written through this module so far, in order."""
    return list(_completed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep(folder: Path) -> list[Path]:
    """Remove the temp files in ``folder`` left by processes of this host that have died; the removed paths."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            try:
                os.unlink(folder / name)
            except OSError:
                continue
            removed.append(folder / name)
    return removed


def _temp(path: Path) -> Path:
    """A new, empty temp file beside ``path`` with a new file's usual mode (mkstemp makes it 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TAG}-{_HOST}-{os.getpid()}-", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def _written(what: str | None, path: Path) -> Path:
    _completed.append(Written(what or "file", path))
    return path


@contextlib.contextmanager
def _filled(path: Path, write: Callable[[Path], None]) -> Iterator[Path]:
    """A temp file beside ``path`` filled by ``write`` (the folder made, dead processes' temp files swept), for
    the block to move into place; removed afterwards if it is still there, on every exit path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent)
    tmp = None
    try:
        tmp = _temp(path)
        write(tmp)
        yield tmp
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: Path, write: Callable[[Path], None], what: str | None = None) -> Path:
    """Create or replace ``path`` by calling ``write(tmp)`` on a temp file in the same folder, then renaming it;
    ``what`` names the file in :func:`completed` (``checkpoint``, ``result``...)."""
    path = Path(path)
    with _filled(path, write) as tmp:
        os.replace(tmp, path)
    return _written(what, path)


def numbered(path: Path) -> Iterable[Path]:
    """``path``, then ``<stem>.1<suffix>``, ``<stem>.2<suffix>``...: the names :func:`atomic_create` tries."""
    path = Path(path)
    yield path
    for n in itertools.count(1):
        yield path.with_name(f"{path.stem}.{n}{path.suffix}")


def atomic_create(names: Iterable[Path], write: Callable[[Path], None], what: str | None = None) -> Path:
    """Write a new file under the first of ``names`` (all in one folder) that does not exist yet, never replacing
    one: ``write(tmp)`` fills a temp file, which is then hard-linked to the name, an exclusive create that fails
    when another process got there first (then the next name is tried). Where the file system has no hard links,
    the name is claimed with an exclusive ``open(..., "x")`` and the finished temp file renamed onto it.
    Returns the name taken."""
    names = iter(names)
    first = Path(next(names))
    with _filled(first, write) as tmp:
        for name in itertools.chain([first], names):
            try:
                os.link(tmp, name)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                try:
                    open(name, "x").close()
                except FileExistsError:
                    continue
                os.replace(tmp, name)
            return _written(what, Path(name))
        raise FileExistsError(f"every name given for {first} is taken")
