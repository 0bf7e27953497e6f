"""The result record: one JSON document per run, with a versioned schema, written atomically.

Fields (``schema_version`` 1):

* ``method`` {name, version, hparams, transductive}; ``dataset`` {name, version, fit_split, split,
  unlabelled_split (the target images ``fit`` saw without labels, or null; absent in older records)};
* ``protocol`` {ways, shots, queries, episodes, seed, episodes_sha};
* ``budget`` {name, iterations};
* ``init`` — null (absent in the oldest records: read as null), or the checkpoint this run started from {path, sha256, method, hparams, dataset,
  fit_split, budget, iterations, fit_seconds, git_commit, recalibrated_batchnorm, init (its own)};
* ``accuracy`` {mean, ci95, per_episode, by_step: [{step, mean, ci95}]} — the top-level figures are
  after the last adaptation step; ``ci95`` is the half-width of the normal 95 % interval;
* ``adaptation`` {steps, ms_per_episode, ms_by_step}: time to adapt one episode (inside ``adapt``);
* ``fit`` {seconds, iterations, tasks, images, tasks_per_s, images_per_s, peak_memory_bytes,
  peak_memory_kind, notes (absent in older records)}; ``evaluation`` {seconds, tasks_per_s, peak_memory_bytes,
  peak_memory_kind, batched_episodes (episodes per ``predict_batch`` chunk, or null; absent in older records)};
* ``provenance`` {mtbench_version, git_commit, git_dirty, torch, python, device, device_type,
  threads, malloc, timestamp, command, precision (``fp32`` or ``bf16``), compile (bool); the last two
  are absent in older records, which ran fp32 and uncompiled};
* ``submission`` — null for a run of a registered method, or {source, class, source_sha256} for a
  method given to ``mtbench submit`` (absent in older records: null).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mtbench import __version__
from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError
from mtbench.core.runtime import PRECISIONS

SCHEMA_VERSION = 1

NUMBER = (int, float)
SCHEMA: dict[str, Any] = {
    "schema_version": int,
    "method": {"name": str, "version": str, "hparams": dict, "transductive": bool},
    "dataset": {"name": str, "version": str, "fit_split": str, "split": str},
    "protocol": {"ways": int, "shots": int, "queries": int, "episodes": int, "seed": int, "episodes_sha": str},
    "budget": {"name": str, "iterations": int},
    "init": (dict, type(None)),
    "accuracy": {"mean": NUMBER, "ci95": NUMBER, "per_episode": list, "by_step": list},
    "adaptation": {"steps": int, "ms_per_episode": NUMBER, "ms_by_step": list},
    "fit": {"seconds": NUMBER, "iterations": int, "tasks": int, "images": int, "tasks_per_s": NUMBER,
            "images_per_s": NUMBER, "peak_memory_bytes": int, "peak_memory_kind": str},
    "evaluation": {"seconds": NUMBER, "tasks_per_s": NUMBER, "peak_memory_bytes": int, "peak_memory_kind": str},
    "provenance": {"mtbench_version": str, "git_commit": (str, type(None)), "git_dirty": (bool, type(None)),
                   "torch": str, "device": str, "timestamp": str},
}


def check_fields(doc: Any, schema: dict[str, Any], where: str = "", what: str = "result") -> list[str]:
    """Problems with ``doc`` against ``schema``: nested dicts of keys to types (or tuples of types);
    ``what`` names the document when it is not an object at all."""
    if not isinstance(doc, dict):
        return [f"{where or what}: expected an object"]
    problems = []
    for key, kind in schema.items():
        path = f"{where}.{key}" if where else key
        if key not in doc:
            problems.append(f"{path}: missing")
        elif isinstance(kind, dict):
            problems.extend(check_fields(doc[key], kind, path, what))
        elif not isinstance(doc[key], kind) or (kind in (int, NUMBER) and isinstance(doc[key], bool)):
            problems.append(f"{path}: expected {getattr(kind, '__name__', kind)}, got {type(doc[key]).__name__}")
    return problems


def validate(doc: Any) -> list[str]:
    """Problems with ``doc`` against the result schema (empty when it conforms)."""
    problems = check_fields(doc, SCHEMA)
    if not problems:
        if doc["schema_version"] != SCHEMA_VERSION:
            problems.append(f"schema_version: {doc['schema_version']} is not {SCHEMA_VERSION}")
        acc = doc["accuracy"]
        if len(acc["per_episode"]) != doc["protocol"]["episodes"]:
            problems.append("accuracy.per_episode: length differs from protocol.episodes")
        if len(acc["by_step"]) != doc["adaptation"]["steps"]:
            problems.append("accuracy.by_step: length differs from adaptation.steps")
        precision, compiled = execution(doc)
        if precision not in PRECISIONS:
            problems.append(f"provenance.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
        if not isinstance(compiled, bool):
            problems.append(f"provenance.compile: expected bool, got {type(compiled).__name__}")
    return problems


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


def execution(doc: dict[str, Any]) -> tuple[Any, Any]:
    """``(precision, compile)`` a result ran with; ``("fp32", False)`` for records older than the options."""
    prov = doc["provenance"]
    return prov.get("precision", "fp32"), prov.get("compile", False)


def execution_label(doc: dict[str, Any]) -> str:
    """``" (bf16, compiled)"``, ``" (bf16)"``, ``" (compiled)"``, or ``""`` for an fp32 uncompiled run."""
    precision, compiled = execution(doc)
    parts = ([precision] if precision != "fp32" else []) + (["compiled"] if compiled else [])
    return f" ({', '.join(parts)})" if parts else ""


def provenance(device_name: str, device_type: str, malloc: dict[str, Any], command: str | None,
               precision: str = "fp32", compile: bool = False) -> dict[str, Any]:
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


def setting_name(protocol: dict[str, Any]) -> str:
    """The protocol's short name, as file names and leaderboard folders spell it: ``5w1s``, ``transfer200-50``."""
    p = protocol
    return f"transfer{p['train_images']}-{p['test_images']}" if p.get("kind") == "transfer" else f"{p['ways']}w{p['shots']}s"


def result_filename(doc: dict[str, Any]) -> str:
    p = doc["protocol"]
    stamp = doc["provenance"]["timestamp"].replace(":", "").replace("-", "").replace("+0000", "Z")
    return f"{doc['dataset']['name']}_{setting_name(p)}_{doc['method']['name']}_seed{p['seed']}_{stamp}.json"


def write_result(doc: dict[str, Any], out_dir: Path) -> Path:
    """Validate and write ``doc`` into ``out_dir`` atomically (temp file + rename); return its path."""
    problems = validate(doc)
    if problems:
        raise ValueError("refusing to write an invalid result: " + "; ".join(problems))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the results folder {out_dir} ({exc.strerror}); choose another with --out") from None
    path = out_dir / result_filename(doc)
    n = 1
    while path.exists():
        path = out_dir / f"{path.stem.rsplit('.', 1)[0]}.{n}.json"
        n += 1
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1) + "\n"))


def read_result(path: Path) -> dict[str, Any]:
    """Load a result file and check it against the schema (a :class:`UserError` names the problems)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read result {path}: {exc}") from None
    if isinstance(doc, dict) and doc.get("schema_version") == SCHEMA_VERSION:
        doc.setdefault("init", None)  # schema 1 records written before checkpoints existed started from nothing
        if isinstance(doc.get("method"), dict) and "variant" not in doc["method"]:
            from mtbench.methods import METHODS

            name = doc["method"].get("name")
            doc["method"]["variant"] = METHODS.get(name).variant(doc) if name in METHODS else ""
    problems = validate(doc)
    if problems:
        raise UserError(f"{path} is not a valid mtbench result: {'; '.join(problems)}")
    return doc
