"""Shared test helpers: where the real datasets are, and running the CLI on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def shared_root() -> Path:
    """The real datasets: ``$MTBENCH_DATA``, else ``../shared/datasets`` beside the checkout."""
    return Path(os.environ.get("MTBENCH_DATA") or HERE.parent.parent / "shared" / "datasets").resolve()


def requires_real_data(name: str) -> Path:
    """Skip the calling test unless the real dataset ``name`` is under :func:`shared_root`."""
    folder = shared_root() / name
    if not folder.is_dir():
        pytest.skip(f"real dataset {name} not found under {shared_root()} (set MTBENCH_DATA)")
    return folder


def cli_run(out: Path, *args: str) -> dict:
    """``mtbench run ARGS`` in a subprocess, as a user types it, on the real data; its one result."""
    cmd = [sys.executable, "-m", "mtbench.cli", "run", "--data-root", str(shared_root()), "--out", str(out),
           "--no-download", "--no-progress", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list(out.glob("*.json"))
    assert len(files) == 1
    print(done.stdout)
    return json.loads(files[0].read_text())
