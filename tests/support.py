"""Shared test helpers: where the real datasets are."""

from __future__ import annotations

import os
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
