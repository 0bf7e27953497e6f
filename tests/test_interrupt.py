"""Interruption and concurrency: SIGINT / SIGTERM say exactly what a run had written and leave no temp file,
a SIGKILLed write's temp file is swept by the next write into its folder, and results written by many
processes at once never overwrite each other."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mtbench.core import atomic
from mtbench.core.atomic import atomic_create, atomic_write, completed, numbered, sweep
from mtbench.results import read_result, write_result
from support import result_doc


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _start_run(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """``mtbench run`` of ProtoNet on the synthetic data in a subprocess, its stderr going to a file."""
    err = tmp_path / "stderr.txt"
    # -X faulthandler: a run that does not end after a signal is dumped by _ended (every thread's traceback)
    cmd = [sys.executable, "-X", "faulthandler", "-m", "mtbench.cli", "run", "--method", "protonet", "--dataset",
           "synthetic",
           "--out", str(tmp_path / "results"), "--device", "cpu", *args]
    env = {**os.environ, "MTBENCH_CACHE": str(tmp_path / "cache")}
    with open(err, "w") as f:
        # SIGINT at its default in the child: a process that inherits it ignored (as a pytest-xdist worker's child may;
        # a CI run's faulthandler dump showed the run evaluating on 60 s after SIGINT) keeps it ignored, as Python does
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, env=env, cwd=tmp_path,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, err


def _ended(proc: subprocess.Popen, err: Path, timeout: float = 60.0) -> int:
    """The run's exit status; a run still going after ``timeout`` s is sent SIGABRT, which its faulthandler answers
    with every thread's traceback on stderr, and the test fails with that stderr (a hang, diagnosed)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=30)
        pytest.fail(f"the run did not end {timeout:.0f} s after the signal; its stderr:\n{err.read_text()[-6000:]}")


def _wait_for(found, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not found():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the run ended or took too long before {what} (rc {proc.poll()})")
        time.sleep(0.05)


def test_sigint_after_save_names_the_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "ck.pt"
    proc, err = _start_run(tmp_path, "--budget", "1", "--episodes", "5000", "--save", str(ckpt), "--no-progress")
    _wait_for(ckpt.exists, proc, "the checkpoint was written")
    time.sleep(0.3)  # into the evaluation
    proc.send_signal(signal.SIGINT)
    assert _ended(proc, err) == 130
    last = err.read_text().strip().splitlines()[-1]
    assert last == f"mtbench: interrupted by SIGINT; it had written a checkpoint at {ckpt}, nothing else"
    assert not list((tmp_path / "results").glob("*")) and not _temps(tmp_path)


def test_sigterm_during_fit_says_nothing_was_written(tmp_path: Path) -> None:
    proc, err = _start_run(tmp_path, "--budget", "10000", "--episodes", "5", "--save", str(tmp_path / "ck.pt"))
    _wait_for(lambda: "training" in err.read_text(), proc, "the fit started")
    proc.send_signal(signal.SIGTERM)
    assert _ended(proc, err) == 143
    last = err.read_text().replace("\r", "\n").strip().splitlines()[-1]
    assert last == "mtbench: interrupted by SIGTERM; nothing was written"
    assert not (tmp_path / "ck.pt").exists() and not (tmp_path / "results").exists() and not _temps(tmp_path)


_KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from mtbench.core.atomic import atomic_write

def write(tmp):
    tmp.write_bytes(b"half a cache")
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(Path(sys.argv[1]), write)
"""


def test_a_sigkilled_write_leaves_a_temp_file_the_next_write_sweeps(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "tensors.pt"
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(target)], check=False)
    assert done.returncode == -signal.SIGKILL
    orphans = _temps(tmp_path)
    assert len(orphans) == 1 and not target.exists()
    # a write in progress in a live process is left alone
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        busy = target.parent / f".other.{atomic.TAG}-{atomic._HOST}-{live.pid}-abc.tmp"
        busy.write_bytes(b"")
        atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
        assert target.read_bytes() == b"whole"
        assert _temps(tmp_path) == [busy]
        live.kill()
    assert sweep(target.parent) == [busy] and not _temps(tmp_path)


def test_a_failed_write_removes_its_temp_file_and_records_nothing(tmp_path: Path) -> None:
    before = len(completed())

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.json", fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_create(numbered(tmp_path / "y.json"), fail)
    assert not list(tmp_path.iterdir()) and len(completed()) == before
    atomic_write(tmp_path / "ck.pt", lambda tmp: tmp.write_text("ok"), what="checkpoint")
    assert completed()[-1] == atomic.Written("checkpoint", tmp_path / "ck.pt")


def test_exclusive_create_numbers_a_taken_name_and_works_without_hard_links(tmp_path: Path, monkeypatch) -> None:
    first = atomic_create(numbered(tmp_path / "r.json"), lambda tmp: tmp.write_text("1"))
    second = atomic_create(numbered(tmp_path / "r.json"), lambda tmp: tmp.write_text("2"))
    assert (first.name, second.name) == ("r.json", "r.1.json")

    def no_links(src, dst):  # a file system without hard links (some network and FAT mounts)
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    third = atomic_create(numbered(tmp_path / "r.json"), lambda tmp: tmp.write_text("3"))
    assert third.name == "r.2.json"
    assert [p.read_text() for p in (first, second, third)] == ["1", "2", "3"] and not _temps(tmp_path)


WRITERS, EACH = 6, 10


def _writer(i: int, barrier, out: str) -> None:
    barrier.wait()
    for j in range(EACH):
        doc = result_doc("protonet", [0.5, 0.6, 0.7])
        doc["provenance"]["command"] = f"writer {i} result {j}"
        write_result(doc, Path(out))


def test_writers_released_at_once_lose_no_result(tmp_path: Path) -> None:
    """Six processes released by one barrier each write ten results of the very same file name."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(i, barrier, str(tmp_path))) for i in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    files = sorted(tmp_path.glob("*.json"))
    commands = sorted(read_result(f)["provenance"]["command"] for f in files)
    assert len(files) == WRITERS * EACH
    assert commands == sorted(f"writer {i} result {j}" for i in range(WRITERS) for j in range(EACH))
    assert not _temps(tmp_path)
    assert json.loads(files[0].read_text())["method"]["name"] == "protonet"
