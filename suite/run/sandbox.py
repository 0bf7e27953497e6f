"""The child process an outside method runs in: bubblewrap where it works, resource limits, pipes, deadlines.

:class:`Sandbox` starts ``python -m mtbench.run.worker`` (the child side) and talks to it in messages: an
8-byte little-endian length, then a ``torch.save``'d dict of tensors and plain values. The parent reads the
child's messages with ``weights_only=True``, so nothing the child sends is unpickled as code. Large inputs
(a fit's split) go through files in a folder the child can only read.

Containment, where bubblewrap (``bwrap``, Debian package ``bubblewrap``) works: the whole machine read-only
(``--ro-bind / /``), a private ``/tmp``, a fresh ``/dev`` and ``/proc``, no network (``--unshare-net``), its
own pid namespace, no capabilities, the data root and the decoded-tensor cache hidden behind empty folders,
and one writable scratch folder (its working folder and ``$HOME``), removed afterwards. Everywhere: a
wall-time limit per stage (the parent kills the child at the deadline), and the child's own ``RLIMIT_CPU``
and ``RLIMIT_AS`` (the address space; not on CUDA, whose driver reserves more address space than memory),
set before it imports anything. Whether bubblewrap works is tried once per process (user namespaces may be
disabled); without it the child runs with the limits alone, and :attr:`Sandbox.description` says so.
``$MTBENCH_BWRAP`` names another bwrap binary (empty: do not use bubblewrap).
"""

from __future__ import annotations

import functools
import io
import json
import os
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from mtbench.core.errors import UserError

#: seconds for the child to start (Python, torch and mtbench imports: no outside code runs yet)
START_SECONDS = 300.0
#: the largest message the parent accepts from the child
MAX_MESSAGE = 1 << 30
#: environment variables the child keeps; everything else (tokens, data paths) is left out
KEEP_ENV = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "VIRTUAL_ENV", "TZ",
            "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_HEADER = struct.Struct("<Q")


class SandboxError(UserError):
    """The method's process failed as a process: it ran past a time limit, died, or sent something unreadable."""


class MethodError(UserError):
    """The method's own code raised, or returned what the protocol does not allow; the message says which."""


@dataclass(frozen=True)
class Limits:
    """What the child may use.

    Attributes:
        cpu_seconds: ``RLIMIT_CPU`` of the child (all its threads together).
        memory_bytes: ``RLIMIT_AS`` of the child, or ``None`` (on CUDA).
        threads: torch's CPU threads in the child (the parent's).
        malloc_tuning: tune the child's allocator as ``mtbench run`` does.
    """

    cpu_seconds: int
    memory_bytes: int | None
    threads: int
    malloc_tuning: bool = False


def physical_memory() -> int:
    """Bytes of physical memory of the machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@functools.cache
def bwrap_status(binary: str) -> tuple[str | None, str]:
    """``(path, version)`` when bubblewrap at ``binary`` can start a sandbox here, else ``(None, reason)``.

    Tried once per binary and process: a real sandbox with the options :class:`Sandbox` uses, running
    this Python (user namespaces can be disabled, or bwrap missing or not executable)."""
    path = shutil.which(binary) if binary else None
    if path is None:
        return None, f"no bubblewrap ({binary!r} not found)" if binary else "bubblewrap turned off ($MTBENCH_BWRAP is empty)"
    try:
        probe = subprocess.run([path, *_namespace_args(), "--", sys.executable, "-c", "pass"],
                               capture_output=True, text=True, timeout=60, check=False)
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                                 check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{path} cannot run: {exc}"
    if probe.returncode != 0:
        lines = (probe.stderr or "").strip().splitlines()
        return None, f"{path} cannot start a sandbox here: {lines[-1] if lines else f'exit code {probe.returncode}'}"
    return path, version or "bubblewrap"


def _namespace_args() -> list[str]:
    return ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--unshare-net",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL"]


def _bwrap_args(work: Path, inputs: Path, hide: list[Path], device_type: str) -> list[str]:
    """bubblewrap's options: the namespaces, the hidden folders, then the scratch folder's mounts (after the
    private /tmp, which would otherwise cover them), the GPU's device files on CUDA."""
    args = _namespace_args()
    tmp = Path("/tmp")
    for path in hide:
        if path.is_dir() and tmp not in path.parents and path != tmp:
            args += ["--tmpfs", str(path)]
    # the Python running the child and mtbench's own code stay visible even when they live under /tmp
    for path in {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(__file__).resolve().parents[2]}:
        if tmp in path.parents:
            args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(work), str(work), "--ro-bind", str(inputs), str(inputs), "--chdir", str(work)]
    if device_type == "cuda":
        for dev in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(dev), str(dev)]
    return args


def _child_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in KEEP_ENV or k.startswith("CUDA_")}
    env.update(HOME=str(work), TMPDIR="/tmp", PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return env


def encode(message: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(message, buf)
    return _HEADER.pack(buf.tell()) + buf.getvalue()


def decode(data: bytes) -> dict[str, Any]:
    message = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if not isinstance(message, dict):
        raise TypeError(f"a message is a dict, got {type(message).__name__}")
    return message


class Sandbox:
    """One child process that imports and runs outside code; see the module docstring.

    Args:
        limits: the child's CPU and memory limits.
        hide: folders the child must not see (the data root, the tensor cache), under bubblewrap.
        device_type: ``cpu`` or ``cuda`` (the GPU's device files are then visible).
    """

    def __init__(self, limits: Limits, hide: list[Path] = (), device_type: str = "cpu") -> None:  # type: ignore[assignment]
        self.limits = limits
        self.scratch = Path(tempfile.mkdtemp(prefix="mtbench-sandbox-")).resolve()
        self.work, self.inputs = self.scratch / "work", self.scratch / "in"
        self.work.mkdir()
        self.inputs.mkdir()
        bwrap, detail = bwrap_status(os.environ.get("MTBENCH_BWRAP", "bwrap"))
        self.contained = bwrap is not None
        worker = [sys.executable, "-s", "-m", "mtbench.run.worker", json.dumps(asdict(limits))]
        hidden = [p.resolve() for p in hide if p is not None]
        if bwrap is not None:
            argv = [bwrap, *_bwrap_args(self.work, self.inputs, hidden, device_type), "--", *worker]
            memory = f"{limits.memory_bytes / 2**30:.0f} GiB of address space" if limits.memory_bytes else \
                "no memory limit on CUDA"
            self.description = (f"sandbox: {detail}: the machine read-only, private /tmp, no network, the data "
                                f"hidden, writable scratch folder {self.work} only; CPU {limits.cpu_seconds} s, "
                                f"{memory}")
        else:
            argv = worker
            self.description = (f"sandbox: NOT CONTAINED ({detail}): the method runs in a child process with time, "
                                f"CPU and memory limits only; it can read and write your files and use the network")
        self._stage, self._deadline, self._limit = "start", time.monotonic() + START_SECONDS, START_SECONDS
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=self.work,
                                     env=_child_env(self.work), start_new_session=True)
        os.set_blocking(self.proc.stdin.fileno(), False)  # type: ignore[union-attr]
        os.set_blocking(self.proc.stdout.fileno(), False)  # type: ignore[union-attr]
        self._receive()  # the child's "ready"

    # -- stages -----------------------------------------------------------------------------------
    @property
    def stage_name(self) -> str:
        """The stage the requests now belong to (named in errors)."""
        return self._stage

    @contextmanager
    def stage(self, name: str, seconds: float) -> Iterator[None]:
        """Every request inside must be answered within ``seconds`` of entering the stage."""
        saved = self._stage, self._deadline, self._limit
        self._stage, self._deadline, self._limit = name, time.monotonic() + seconds, seconds
        try:
            yield
        finally:
            self._stage, self._deadline, self._limit = saved

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send ``op`` with ``fields``; the child's answer. A :class:`MethodError` when the method's code raised."""
        self._send(encode({"op": op, **fields}))
        reply = self._receive()
        if "error" in reply:
            raise MethodError(str(reply["error"]))
        return reply

    def put_bytes(self, name: str, data: bytes) -> str:
        """Write ``data`` as a file the child can read (and not write); its path, for a request."""
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    def put(self, name: str, obj: Any) -> str:
        """Write ``obj`` where the child can read it (and not write it); its path, for a request."""
        path = self.inputs / name
        torch.save(obj, path)
        return str(path)

    def close(self) -> None:
        """Stop the child (if it still runs) and remove the scratch folder."""
        if self.proc.poll() is None:
            try:
                self._send(encode({"op": "exit"}))
                self.proc.wait(timeout=5)
            except (SandboxError, OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> Sandbox:  # noqa: PYI034 - not subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the wire ---------------------------------------------------------------------------------
    def _kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def _timed_out(self) -> SandboxError:
        self._kill()
        return SandboxError(f"the {self._stage} stage ran past its time limit of {self._limit:g} s (--timeout); "
                            f"the method's process was stopped")

    def _ended(self) -> SandboxError:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self.proc.returncode
        if code < 0:
            name = signal.Signals(-code).name
            why = {"SIGXCPU": f": its CPU-time limit of {self.limits.cpu_seconds} s"}.get(name, "")
            how = f"was killed by {name}{why}"
        elif self._stage == "start":
            how = f"could not start (exit code {code}; see its messages above)"
        else:
            how = f"exited with code {code}"
        return SandboxError(f"the method's process {how} during the {self._stage} stage")

    def _wait(self, fd: int, events: int) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, events)
            if not sel.select(remaining):
                raise self._timed_out()

    def _send(self, data: bytes) -> None:
        fd = self.proc.stdin.fileno()  # type: ignore[union-attr]
        view = memoryview(data)
        while view:
            self._wait(fd, selectors.EVENT_WRITE)
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise self._ended() from None

    def _read(self, n: int) -> bytes:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        chunks, left = [], n
        while left:
            self._wait(fd, selectors.EVENT_READ)
            try:
                chunk = os.read(fd, min(left, 1 << 20))
            except BlockingIOError:
                continue
            if not chunk:
                raise self._ended()
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _receive(self) -> dict[str, Any]:
        (size,) = _HEADER.unpack(self._read(_HEADER.size))
        if size > MAX_MESSAGE:
            self._kill()
            raise SandboxError(f"the method's process sent a message of {size} bytes during the {self._stage} stage "
                               f"(at most {MAX_MESSAGE}); it was stopped")
        data = self._read(size)
        try:
            return decode(data)
        except Exception as exc:  # noqa: BLE001 - whatever the child wrote, it is refused in one line
            self._kill()
            raise SandboxError(f"the method's process sent an unreadable message during the {self._stage} stage "
                               f"({type(exc).__name__}); it was stopped") from None
