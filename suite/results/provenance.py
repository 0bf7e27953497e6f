"""Where a run ran: the checkout, the machine, the command; and how (precision, compilation)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mtbench import __version__


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout mtbench runs from, or (None, None) outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def execution_label(doc: dict[str, Any]) -> str:
    """``" (bf16, compiled)"``, ``" (bf16)"``, ``" (compiled)"``, or ``""`` for an fp32 uncompiled run."""
    prov = doc["provenance"]
    parts = ([prov["precision"]] if prov["precision"] != "fp32" else []) + (["compiled"] if prov["compile"] else [])
    return f" ({', '.join(parts)})" if parts else ""


def provenance(device_name: str, device_type: str, malloc: dict[str, Any], command: str | None,
               precision: str = "fp32", compile: bool = False) -> dict[str, Any]:
    """The ``provenance`` section of a result (:class:`mtbench.results.schema.Provenance`) as a run starts."""
    commit, dirty = git_state()
    return {
        "mtbench_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch": str(torch.__version__),
        "python": sys.version.split()[0],
        "device": device_name,
        "device_type": device_type,
        "threads": torch.get_num_threads(),
        "malloc": malloc,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "precision": precision,
        "compile": compile,
    }
