"""Shared test helpers: where the real datasets are, and running the CLI on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent

#: a ``device`` parametrization: the CPU always, CUDA where a GPU is (marked ``gpu``, skipped without one), for
#: the tests whose paths differ by device (batched adaptation vmaps backbone copies on CUDA, loops on the CPU)
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


def on_device(items: tuple, device: str) -> tuple:
    """``items`` with each tensor among them moved to ``device`` (a fixture's tuple of shapes and tensors)."""
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in items)


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


def result_doc(method: str, per_episode: list[float], *, dataset: str = "synthetic", ways: int = 5, shots: int = 1,
               queries: int = 2, sha: str = "a" * 64, by_step: list[float] | None = None,
               ms_by_step: list[float] | None = None, device: str = "CPU Test Processor (2 threads)",
               stamp: str = "2026-01-01T00:00:00+00:00", fit_seed: int = 0, **top) -> dict:
    """A complete result of the current ``schema_version`` made from scratch (no run), deterministic: ``per_episode`` are the
    final accuracies (multiples of 1 / (ways * queries) to be consistent); ``by_step`` the means of the steps
    before the last; ``fit_seed`` its ``fit.seed``; ``top`` replaces top-level sections (``init``, ``submission``,
    ``source``...)."""
    from mtbench.core.errors import UserError
    from mtbench.core.metrics import mean_ci95
    from mtbench.methods import METHODS

    try:  # a built-in method's result is of its installed version
        version = str(METHODS.get(method).version)
    except UserError:
        version = "1"
    mean, ci = mean_ci95(per_episode)
    steps = [*(by_step or []), mean]
    ms = ms_by_step or [float(i + 1) for i in range(len(steps))]
    doc = {
        "schema_version": 6,
        "method": {"name": method, "version": version, "hparams": {}, "transductive": False, "variant": ""},
        "dataset": {"name": dataset, "version": "1", "fit_split": "train", "split": "test", "unlabelled_split": None,
                    "support_split": None, "notes": []},
        "source": None,
        "protocol": {"kind": "episodes", "ways": ways, "shots": shots, "queries": queries,
                     "episodes": len(per_episode), "seed": 0, "episodes_sha": sha, "support_from": "test",
                     "queries_from": "test", "fit_episodes": None},
        "budget": {"name": "quick", "iterations": 10},
        "init": None,
        "accuracy": {"mean": mean, "ci95": ci, "per_episode": per_episode,
                     "by_step": [{"step": i, "mean": m, "ci95": ci if i == len(steps) - 1 else 0.0}
                                 for i, m in enumerate(steps)]},
        "adaptation": {"steps": len(steps), "ms_per_episode": ms[-1], "ms_by_step": ms},
        "fit": {"seed": fit_seed, "seconds": 10.0, "iterations": 10, "tasks": 10, "images": 100, "tasks_per_s": 1.0,
                "images_per_s": 10.0, "peak_memory_bytes": 2 ** 28, "peak_memory_kind": "cpu_peak_rss", "notes": []},
        "evaluation": {"seconds": 2.0, "tasks_per_s": len(per_episode) / 2.0, "peak_memory_bytes": 2 ** 28,
                       "peak_memory_kind": "cpu_peak_rss", "batched_episodes": None},
        "provenance": {"mtbench_version": "0.1.0", "git_commit": "0" * 40, "git_dirty": False, "torch": "2.0",
                       "python": "3.11", "device": device, "device_type": "cpu", "threads": 2, "malloc": {},
                       "timestamp": stamp, "command": f"mtbench run --method {method}", "precision": "fp32",
                       "compile": False},
        "submission": None,
        "reproduced": [],
    }
    doc.update(top)
    if "budget" in top and "fit" not in top:  # a whole fit of the budget given (a partial one: set fit.iterations)
        doc["fit"]["iterations"] = doc["budget"]["iterations"]
    return doc


def init_doc(method: str = "protonet", **fields) -> dict:
    """A complete ``init`` section (the checkpoint a run started from) for :func:`result_doc`; ``fields``
    replace its defaults: by default a whole fit of the built-in ``method``'s quick budget on the synthetic data."""
    from mtbench.methods import METHODS

    doc = {"path": f"{method}.pt", "sha256": "c" * 64, "recalibrated_batchnorm": False, "method": method,
           "method_version": METHODS.get(method).version, "hparams": {}, "dataset": "synthetic", "fit_split": "train",
           "budget": "quick", "fit_seconds": 1.0, "fit_seed": 0, "init": None, "git_commit": None, **fields}
    return {**doc, "iterations": fields.get("iterations", METHODS.get(method).iterations_for(doc["budget"],
                                                                                             doc["dataset"]))}


def put_result(folder: Path, doc: dict, name: str | None = None) -> Path:
    """Write ``doc`` as ``folder/<name or method>.json`` (creating the folder); its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or doc['method']['name']}.json"
    path.write_text(json.dumps(doc, indent=1))
    return path
