"""Result files: their names, writing one atomically, and reading one (through :func:`upgrade`) checked."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePath
from typing import Any

from mtbench.core.atomic import atomic_create, numbered
from mtbench.core.errors import UserError
from mtbench.results.schema import validate
from mtbench.results.upgrade import upgrade


def setting_name(protocol: dict[str, Any]) -> str:
    """The protocol's short name, as file names and leaderboard folders spell it: ``5w1s``, ``transfer200-50``.
    ``protocol`` is a result's, or a protocol's own record (``TransferSpec.record()``, or an ``EpisodeSpec``
    as a dict, which has no ``kind``)."""
    p = protocol
    return f"transfer{p['train_images']}-{p['test_images']}" if p.get("kind") == "transfer" else f"{p['ways']}w{p['shots']}s"


def result_filename(doc: dict[str, Any]) -> str:
    p = doc["protocol"]
    stamp = doc["provenance"]["timestamp"].replace(":", "").replace("-", "").replace("+0000", "Z")
    name = doc["dataset"]["name"]
    if ":" in name or "/" in name:  # an image folder's "folder:/its/path": its last component, file-name safe
        kind, _, rest = name.partition(":")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{kind}-{PurePath(rest).name}")
    # a fit seed other than 0 in the name too, so that runs told apart only by it are told apart at a glance
    fit = f"_fit{doc['fit']['seed']}" if doc["fit"]["seed"] else ""
    return f"{name}_{setting_name(p)}_{doc['method']['name']}_seed{p['seed']}{fit}_{stamp}.json"


def write_result(doc: dict[str, Any], out_dir: Path) -> Path:
    """Validate and write ``doc`` into ``out_dir`` atomically under a name no other result has; return its path."""
    problems = validate(doc)
    if problems:
        raise ValueError("refusing to write an invalid result: " + "; ".join(problems))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the results folder {out_dir} ({exc.strerror}); choose another with --out") from None
    # an exclusive create: concurrent writers of the same name each get a file of their own (name.1.json...)
    return atomic_create(numbered(out_dir / result_filename(doc)),
                         lambda tmp: tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n"),
                         what="result")


def inspect_result(path: Path) -> tuple[dict[str, Any] | None, str]:
    """``path`` read as the current schema (an older one through :func:`upgrade`) and checked: ``(doc, "")``, or
    ``(None, reason)`` saying what is wrong in words that leave the path to the caller (a file that cannot be
    read, is not JSON, or is not a valid result)."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        return None, f"cannot read result ({exc.strerror or exc})"
    except ValueError as exc:  # not JSON, or not UTF-8 text
        return None, f"cannot read result (not JSON: {exc})"
    try:
        doc = upgrade(doc)
    except UserError as exc:
        return None, str(exc)
    problems = validate(doc)
    return (None, f"not a valid mtbench result: {'; '.join(problems)}") if problems else (doc, "")


def read_result(path: Path) -> dict[str, Any]:
    """Load a result file as the current schema (an older one through :func:`upgrade`) and check it; a
    :class:`UserError` names the file and its problems."""
    doc, reason = inspect_result(path)
    if doc is None:
        raise UserError(f"{path}: {reason}")
    return doc
