"""What a reason's evidence measured, read from its files, never typed into the reason.

A reason on the reproduction page names the files that measured it (``published.toml``). For a result
file the page shows its accuracy ± 95 % CI and fit iterations; a transfer result also shows the range of
its few trials. When a reason names several result files of the same test episodes (the same dataset
split, protocol and episode seed: episode *i* is drawn from its own seed, so the first *n* episodes of two
runs are the same whatever their counts), each is also paired with the **last** of them, by convention
the leaderboard row the figure is compared with: the mean difference per episode ± its 95 % CI, over the
episodes both scored. Paired on the same episodes, that interval is much narrower than the two rows'
own, so a small measured effect (half the budget, half the images) shows as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtbench.core.errors import UserError
from mtbench.core.metrics import mean_ci95
from mtbench.results import read_result
from mtbench.report.maml_curves import describe_curves

_SAME = ("kind", "ways", "shots", "queries", "seed", "support_from", "queries_from")


def describe(paths: Sequence[str], repo: Path) -> tuple[str, ...]:
    """Each evidence path (relative to ``repo``); a result file's with what it measured:
    ``path (48.29 ± 0.72 % after 100 iterations; -2.44 ± 0.41 points paired with row.json on the same 600
    episodes)``."""
    docs = [result_or_none(repo / p) for p in paths]
    out = []
    for i, (path, doc) in enumerate(zip(paths, docs)):
        if doc is None:  # a bench file of MAML's curves says what it measured; any other file is its path alone
            curves = describe_curves(repo / path) if path.endswith(".json") else None
            out.append(f"{path} ({curves})" if curves else path)
            continue
        what = [_accuracy(doc)]
        later = [(p, d) for p, d in zip(paths[i + 1:], docs[i + 1:]) if d is not None and same_episodes(doc, d)]
        if later:
            what.append(paired(doc, *later[-1]))
        out.append(f"{path} ({'; '.join(what)})")
    return tuple(out)


def result_or_none(path: Path) -> dict[str, Any] | None:
    if path.suffix != ".json":
        return None
    try:
        return read_result(path)
    except (UserError, ValueError, KeyError):
        return None  # not a result file (e.g. a bench file): the path alone


def _accuracy(doc: dict[str, Any]) -> str:
    acc, protocol, iterations, init = doc["accuracy"], doc["protocol"], doc["fit"]["iterations"], doc["init"]
    text = f"{100 * acc['mean']:.2f} ± {100 * acc['ci95']:.2f} %"
    if iterations:
        text += f" after {iterations} iterations"
    elif init and init["iterations"]:  # a run that only adapts a saved fit: how far that fit went
        text += f", from a saved {init['method']} fit of {init['iterations']} iterations"
    if protocol["kind"] == "transfer":  # a few trials: how far one of them may fall from the mean
        each = acc["per_episode"]
        text += (f"; its {len(each)} trials of {protocol['test_images']} test images from {100 * min(each):.0f} "
                 f"to {100 * max(each):.0f} %")
    return text


def same_episodes(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether the two results scored the same test episodes (the first ``min`` of their counts)."""
    pa, pb = a["protocol"], b["protocol"]
    da, db = a["dataset"], b["dataset"]
    return (pa["kind"] == "episodes" and all(pa.get(k) == pb.get(k) for k in _SAME)
            and (da["name"], da["version"], da["split"]) == (db["name"], db["version"], db["split"]))


def paired(doc: dict[str, Any], ref_path: str, ref: dict[str, Any]) -> str:
    """``doc`` minus ``ref`` per episode, over the episodes both scored: mean ± 95 % CI, in points."""
    a, b = doc["accuracy"]["per_episode"], ref["accuracy"]["per_episode"]
    n = min(len(a), len(b))
    mean, ci = mean_ci95([x - y for x, y in zip(a[:n], b[:n])])
    where = f"the same {n} episodes" if len(a) == len(b) else f"the first {n} episodes"
    return f"{100 * mean:+.2f} ± {100 * ci:.2f} points paired with {Path(ref_path).name} on {where}"
