"""Exclusive claims on sweep trials, so that sweeps sharing a leaderboard folder run each trial once.

A claim is a small JSON file created with an exclusive create (``open(path, "x")``: exactly one creator
wins, also on NFS v3+ and other shared file systems that honour ``O_EXCL``) next to where the trial's result
goes. It names the claiming process (pid, host) and is removed when the trial ends, written or failed. The
holder touches it every :data:`HEARTBEAT` seconds, so a claim is *stale* when its pid is dead on this host,
or when it comes from another host and has not been touched for :data:`STALE_AFTER` seconds (a killed node).
A stale claim is taken over under a second exclusive file (``<claim>.takeover``), and by an atomic replace,
so that the claim file never vanishes while it changes hands: a fresh claimer's exclusive create keeps
failing, and two takers cannot both win.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from mtbench.core.atomic import atomic_write

HEARTBEAT = 30.0  # seconds between touches of a held claim
STALE_AFTER = 300.0  # an untouched claim of another host is stale after this many seconds
SUFFIX = ".claim"


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    """The claim's holder, or ``None`` when the file is gone; an unreadable claim reads as an empty holder."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:  # being written this instant, or a holder killed mid-write
        return {}
    return holder if isinstance(holder, dict) else {}


def stale(path: Path, holder: dict[str, Any]) -> bool:
    """Whether the claim at ``path`` held by ``holder`` may be taken over."""
    pid, host = holder.get("pid"), holder.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        return not _alive(pid)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_AFTER


class Claim:
    """A held claim: :meth:`release` (or leaving the ``with`` block) removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"claim {path.name}")
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        holder = _read(self.path)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim(folder: Path, digest: str) -> Claim | None:
    """Claim the trial ``digest`` in ``folder``: a :class:`Claim` when this process now holds it, ``None`` when
    a live process of this or another sweep does."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{digest}{SUFFIX}"
    mine = json.dumps(_me())
    for _ in range(3):
        try:
            with open(path, "x") as f:
                f.write(mine)
            return Claim(path)
        except FileExistsError:
            pass
        holder = _read(path)
        if holder is None:  # released between our create and read: try again
            continue
        if not stale(path, holder) or not _take_over(path, holder, mine):
            return None
        return Claim(path)
    return None


def _take_over(path: Path, holder: dict[str, Any], mine: str) -> bool:
    """Replace the stale claim at ``path`` (last read as ``holder``) by ours; ``False`` when another taker wins."""
    lock = path.with_name(path.name + ".takeover")
    try:
        with open(lock, "x") as f:
            f.write(mine)
    except FileExistsError:
        other = _read(lock)
        if other is not None and stale(lock, other):  # a taker killed in these few lines: the next sweep retries
            lock.unlink(missing_ok=True)
        return False
    try:
        if _read(path) != holder:  # changed hands meanwhile
            return False
        atomic_write(path, lambda tmp: tmp.write_text(mine))
        return True
    finally:
        lock.unlink(missing_ok=True)


def clear_stale(folder: Path, digest: str) -> None:
    """Remove the claim of trial ``digest`` in ``folder`` when its holder is gone (a sweep killed after
    writing the result and before releasing its claim); a live holder's claim stays."""
    path = folder / f".{digest}{SUFFIX}"
    holder = _read(path)
    if holder is not None and stale(path, holder):
        path.unlink(missing_ok=True)


def claims(folder: Path) -> list[Path]:
    """The claim files in ``folder`` (held or stale)."""
    return sorted(folder.glob(f".*{SUFFIX}"))
