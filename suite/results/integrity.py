"""``mtbench validate``: is a result file what ``mtbench run`` wrote, on the official episodes?

Three layers of checks, each naming the field at fault:

1. the schema (:func:`mtbench.results.schema.validate`), an older version read through
   :func:`mtbench.results.upgrade.upgrade` (:func:`mtbench.results.io.inspect_result`);
2. internal consistency: the headline accuracy and its CI are recomputed from the per-episode
   accuracies, the last ``by_step`` entry must equal them, and each per-episode accuracy must be a
   possible score on its episode (a multiple of 1 / number of queries, within [0, 1]): a hand-edited
   accuracy fails here;
3. the episodes: ``episodes_sha`` is recomputed from the dataset in the data root for the recorded
   protocol (split, ways, shots, queries, episodes, seed), and must match, with the dataset at the
   version the registry has now. Shas are computed once per protocol per call.

The first two need the file alone (:func:`file_problems`); the boards run them too
(:mod:`mtbench.results.screen`) and leave out what fails. What no check of a file can prove (an edited
``git_commit`` or ``device``, per-episode values forged together with their mean) only re-running it can.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mtbench.core.errors import UserError
from mtbench.core.metrics import mean_ci95
from mtbench.results.io import inspect_result
from mtbench.results.layout import result_files  # noqa: F401  (the walk check uses; re-exported)

TOLERANCE = 1e-6  # per-episode accuracies are float32 values; a hand edit moves the mean far more


def consistency(doc: dict[str, Any]) -> list[str]:
    """Problems with the accuracy figures of a schema-valid result (empty when they add up)."""
    acc, p = doc["accuracy"], doc["protocol"]
    per = acc["per_episode"]
    if not per or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in per):
        return ["accuracy.per_episode: expected a non-empty list of numbers"]
    problems = []
    queries = p["test_images"] if p["kind"] == "transfer" else p["ways"] * p["queries"]
    off = [i for i, a in enumerate(per) if not (0 <= a <= 1) or abs(a * queries - round(a * queries)) > 1e-3]
    if off:
        problems.append(f"accuracy.per_episode[{off[0]}] = {per[off[0]]!r} is not a possible score on "
                        f"{queries} queries ({len(off)} such value(s))")
    mean, ci = mean_ci95(per)
    for name, given, want in (("mean", acc["mean"], mean), ("ci95", acc["ci95"], ci)):
        if not math.isclose(given, want, rel_tol=0, abs_tol=TOLERANCE):
            problems.append(f"accuracy.{name} = {given!r} but the per-episode accuracies give {want!r}")
    last = acc["by_step"][-1] if acc["by_step"] else None
    if last is None or any(not math.isclose(last[k], acc[k], rel_tol=0, abs_tol=TOLERANCE) for k in ("mean", "ci95")):
        problems.append("accuracy.by_step: its last step differs from accuracy.mean / ci95")
    if len(doc["adaptation"]["ms_by_step"]) != len(acc["by_step"]):
        problems.append("adaptation.ms_by_step: length differs from accuracy.by_step")
    return problems


def file_problems(path: str | Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The checks of a file alone (layers 1 and 2): the result and its problems (none: it is valid); ``None``
    for a file that cannot be read or fails the schema. The problems do not repeat the path."""
    doc, reason = inspect_result(Path(path))
    if doc is None:
        return None, [reason]
    return doc, consistency(doc)


def episodes_sha(doc: dict[str, Any], data_root: str | None) -> str:
    """The sha of the episodes (or transfer trials) that ``doc``'s protocol draws on its dataset now."""
    from mtbench.data import DATASETS
    from mtbench.data.base import resolve_data_root
    from mtbench.data.episodes import EpisodeSet, EpisodeSpec

    record, p = doc["dataset"], doc["protocol"]
    cls = DATASETS.get(record["name"])
    if str(cls.version) != str(record["version"]):
        raise UserError(f"dataset {record['name']} is version {cls.version} here but the result used "
                        f"{record['version']}: its episodes cannot be checked")
    data = cls(root=resolve_data_root(data_root), progress=False)
    data.prepare(download=False)
    split = data.load(p["queries_from"])
    support_from = p["support_from"]
    support = data.load(support_from) if support_from and support_from != split.name else None
    spec = EpisodeSpec(ways=p["ways"], shots=p["shots"], queries=p["queries"], episodes=p["episodes"], seed=p["seed"])
    return EpisodeSet(split, spec, support).sha


def _key(doc: dict[str, Any]) -> tuple[Any, ...]:
    p, d = doc["protocol"], doc["dataset"]
    return (d["name"], d["version"], p["queries_from"], p["support_from"],
            p["ways"], p["shots"], p["queries"], p["episodes"], p["seed"])


def check(paths: Iterable[str | Path], data_root: str | None = None, shas: bool = True,
          echo: Callable[[str], None] = print) -> int:
    """Check every result file under ``paths``; print one line per file; return the number that failed."""
    files = result_files(paths)
    if not files:
        raise UserError(f"no result files (*.json) under {', '.join(map(str, paths))}")
    official: dict[tuple[Any, ...], str | Exception] = {}
    failed = 0
    for path in files:
        doc, problems = file_problems(path)
        if doc is not None and shas and not problems:
            key = _key(doc)
            if key not in official:
                try:
                    official[key] = episodes_sha(doc, data_root)
                except UserError as exc:
                    official[key] = exc
            want = official[key]
            if isinstance(want, Exception):
                problems.append(f"episodes_sha not checked: {want}")
            elif doc["protocol"]["episodes_sha"] != want:
                problems.append(f"protocol.episodes_sha {doc['protocol']['episodes_sha'][:12]}… is not the "
                                f"official {want[:12]}… of this protocol on {doc['dataset']['name']}")
        failed += bool(problems)
        echo(f"{'FAIL' if problems else 'ok  '} {path}" + "".join(f"\n     {p}" for p in problems))
    return failed
