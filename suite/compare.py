"""Side-by-side tables of result files: methods ranked on the very same episodes or transfer trials.

Results are grouped by (dataset, protocol, ``episodes_sha``): only results scored on identical
draws are ranked together, and each row shows its paired difference to the best of its group
(mean ± 95 % CI of the per-episode differences), which is what says whether two methods differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import UserError
from .metrics import mean_ci95
from .results import execution_label, read_result


def collect(paths: Iterable[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Result files under ``paths`` (files or folders, searched recursively), read and validated."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(path.rglob("*.json"))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist; give result files or folders that hold them")
    if not found:
        raise UserError(f"no result files (*.json) under {', '.join(map(str, paths))}")
    return [(p, read_result(p)) for p in found]


def label(doc: dict[str, Any]) -> str:
    """The method's name, as a pipeline when it started from another method's checkpoint, with its
    precision and compilation when not fp32 and uncompiled (e.g. ``protonet (bf16)``)."""
    return _method_label(doc) + execution_label(doc)


def _method_label(doc: dict[str, Any]) -> str:
    name = doc["method"]["name"]
    hp = doc["method"]["hparams"]
    if hp.get("first_order"):
        name += " (1st order)"
    if hp.get("finetune_backbone"):
        name += " (whole network)"
    init = doc.get("init")
    if not init:
        return name
    return f"{name} (saved fit)" if init["method"] == doc["method"]["name"] else f"{init['method']} → {name}"


def _protocol(p: dict[str, Any]) -> str:
    if p.get("kind") == "transfer":
        return f"transfer {p['train_images']}/{p['test_images']}, {p['trials']} trials"
    return f"{p['ways']}-way {p['shots']}-shot, {p['episodes']} episodes"


def tables(results: list[tuple[Path, dict[str, Any]]]) -> list[tuple[str, pd.DataFrame]]:
    """One ranked table per (dataset, protocol, draws), with a title each."""
    groups: dict[tuple[str, str, str], list[tuple[Path, dict[str, Any]]]] = {}
    for path, doc in results:
        p = doc["protocol"]
        groups.setdefault((doc["dataset"]["name"], _protocol(p), p["episodes_sha"]), []).append((path, doc))
    out = []
    for (dataset, protocol, sha), members in sorted(groups.items()):
        members.sort(key=lambda m: -m[1]["accuracy"]["mean"])
        best = members[0][1]["accuracy"]["per_episode"]
        rows = []
        for rank, (path, doc) in enumerate(members, 1):
            acc, fit = doc["accuracy"], doc["fit"]
            diff = [a - b for a, b in zip(acc["per_episode"], best)]
            d_mean, d_ci = mean_ci95(diff)
            first, last = acc["by_step"][0], acc["by_step"][-1]
            init_s = (doc.get("init") or {}).get("fit_seconds") or 0.0
            source = (doc.get("source") or {}).get("name") or ((doc.get("init") or {}).get("dataset")) or dataset
            rows.append({
                "rank": rank,
                "method": label(doc),
                "fitted on": source if (fit["iterations"] or doc.get("init")) else "-",
                "accuracy ± 95% CI": f"{acc['mean']:.4f} ± {acc['ci95']:.4f}",
                "vs best (paired)": "-" if rank == 1 else f"{d_mean:+.4f} ± {d_ci:.4f}"
                                    + (" *" if abs(d_mean) > d_ci else ""),
                "adaptation": (f"step {first['step']}: {first['mean']:.3f} → {last['step']}: {last['mean']:.3f}"
                               if len(acc["by_step"]) > 1 else "-"),
                "fit s": f"{fit['seconds'] + init_s:.0f}",
                "adapt ms": f"{doc['adaptation']['ms_per_episode']:.0f}",
                "device": doc["provenance"]["device"],
                "file": path.name,
            })
        title = f"{dataset} — {protocol} — draws {sha[:12]} ({len(members)} result{'s' * (len(members) > 1)})"
        out.append((title, pd.DataFrame(rows)))
    return out


def _pipes(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(frame: pd.DataFrame, cell: Callable[[str], str] = _pipes) -> str:
    """A GitHub-flavoured Markdown table (without the optional ``tabulate`` dependency); ``cell`` escapes
    each header and cell (by default only ``|``, which would end the cell)."""
    cols = [cell(str(c)) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(str(v)) for v in row) + " |")
    return "\n".join(lines)


def render(results: list[tuple[Path, dict[str, Any]]], fmt: str = "text") -> str:
    """All tables as text (aligned columns) or Markdown, with a legend."""
    parts = []
    for title, frame in tables(results):
        body = markdown(frame) if fmt == "markdown" else frame.to_string(index=False)
        parts.append(f"{'### ' if fmt == 'markdown' else ''}{title}\n\n{body}")
    legend = ("vs best: paired difference to the first row over the same episodes/trials, mean ± 95% CI; "
              "* = the CI excludes 0. fit s includes the first stage of a pipeline.")
    return "\n\n".join(parts) + "\n\n" + legend
