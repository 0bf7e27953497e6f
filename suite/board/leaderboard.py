"""The leaderboard: result files grouped into rankable sets and ranked, with the figures users compare.

Results are ranked together only when they were scored on the very same draws under the same
result schema: the group key is (dataset, setting, ``episodes_sha``, ``schema_version``). Within a
group rows are ranked by mean accuracy; each row carries its paired difference to the best row over
the shared episodes (mean, 95 % CI and a two-sided p-value from the normal approximation), its
adaptation speed (the first reported adaptation step whose mean accuracy reaches ``fraction`` of
the row's final accuracy, and the milliseconds ``adapt`` took to get there), fit time and
throughput, peak memory and the device it ran on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mtbench.core.errors import UserError
from mtbench.core.metrics import Z95, mean_ci95
from mtbench.results import setting_name
from mtbench.results.layout import leaderboard_files
from mtbench.results.screen import LeftOut, left_out_note, screen

FRACTION = 0.95  # adaptation speed: steps / ms to reach this fraction of the final accuracy
MIB = 2 ** 20


@dataclass(frozen=True)
class Entry:
    path: Path
    doc: dict[str, Any]


@dataclass
class Group:
    """Results that share their draws: ``entries`` ranked best first."""

    dataset: str
    setting: str
    sha: str
    schema: int
    entries: list[Entry]

    @property
    def title(self) -> str:
        p = self.entries[0].doc["protocol"]
        shape = (f"transfer, {p['train_images']} labelled / {p['test_images']} test images, {p['trials']} trials"
                 if p["kind"] == "transfer" else f"{p['ways']}-way {p['shots']}-shot, {p['episodes']} episodes")
        return f"{self.dataset} {self.setting} ({shape}; draws {self.sha[:12]})"


def group(results: list[tuple[Path, dict[str, Any]]]) -> list[Group]:
    """Rankable groups of ``results``, sorted by dataset, setting and sha; each ranked by accuracy."""
    groups: dict[tuple[str, str, str, int], list[Entry]] = {}
    for path, doc in results:
        key = (doc["dataset"]["name"], setting_name(doc["protocol"]), doc["protocol"]["episodes_sha"],
               doc["schema_version"])
        groups.setdefault(key, []).append(Entry(Path(path), doc))
    out = []
    for key, entries in sorted(groups.items()):
        entries.sort(key=lambda e: (-e.doc["accuracy"]["mean"], e.path.name))
        out.append(Group(*key, entries))
    return out


@dataclass
class Board:
    """The groups of a leaderboard folder (or a part of it) and the files it leaves out, with why."""

    groups: list[Group]
    left_out: list[LeftOut]
    has: list[str]  # the "<dataset> <setting>" of every valid result of the folder, filtered or not


def board(root: Path, dataset: str | None = None, setting: str | None = None) -> Board:
    """The result files under ``root`` (``<dataset>/<setting>/*.json``), optionally filtered, screened as every
    board screens them (:func:`mtbench.results.screen.screen`: what fails ``mtbench validate``'s checks of the
    file, cannot be read or repeats a run is left out and listed) and grouped; a left-out file counts in
    the folder it lies in."""
    if not root.is_dir():
        raise UserError(f"leaderboard folder {root} does not exist; give --leaderboards DIR")
    screened = screen(leaderboard_files(root))
    picked = [(p, d) for p, d in screened.results
              if dataset in (None, d["dataset"]["name"]) and setting in (None, setting_name(d["protocol"]))]
    left = [x for x in screened.left_out if dataset in (None, x.path.parts[-3]) and setting in (None, x.path.parts[-2])]
    return Board(group(picked), left, sorted({f"{d['dataset']['name']} {setting_name(d['protocol'])}"
                                               for _, d in screened.results}))


def shown(root: Path, dataset: str | None = None, setting: str | None = None) -> Board:
    """:func:`board`, where no result to show is an error that says what the folder has and what it left out."""
    found = board(root, dataset, setting)
    if not found.groups:
        left = "".join(f"; left out {x.path}: {x.reason}" for x in found.left_out)
        raise UserError(f"no results for dataset {dataset or 'any'}, protocol {setting or 'any'} under {root}; "
                        f"it has: {', '.join(found.has) or 'nothing'}{left}")
    return found


def load(root: Path, dataset: str | None = None, setting: str | None = None) -> list[Group]:
    """The groups of :func:`shown`."""
    return shown(root, dataset, setting).groups


def paired(doc: dict[str, Any], best: dict[str, Any]) -> tuple[float, float, float]:
    """Mean and 95 % CI half-width of ``doc``'s per-episode accuracy minus ``best``'s, and the two-sided p-value
    of a zero mean difference (normal approximation; 1.0 when every difference is 0)."""
    diff = [a - b for a, b in zip(doc["accuracy"]["per_episode"], best["accuracy"]["per_episode"])]
    mean, ci = mean_ci95(diff)
    if ci == 0:
        return mean, ci, 1.0 if mean == 0 else 0.0
    z = mean / (ci / Z95)
    return mean, ci, math.erfc(abs(z) / math.sqrt(2))


def adaptation_speed(doc: dict[str, Any], fraction: float = FRACTION) -> tuple[int, float]:
    """(step, ms): the first reported adaptation step whose mean accuracy reaches ``fraction`` of the final
    accuracy, and the cumulative time inside ``adapt`` up to it."""
    by_step, ms = doc["accuracy"]["by_step"], doc["adaptation"]["ms_by_step"]
    target = fraction * doc["accuracy"]["mean"]
    i = next(i for i, s in enumerate(by_step) if s["mean"] >= target - 1e-12)
    return by_step[i]["step"], ms[i]


def peak_mib(doc: dict[str, Any]) -> float:
    return max(doc["fit"]["peak_memory_bytes"], doc["evaluation"]["peak_memory_bytes"]) / MIB


def device(doc: dict[str, Any]) -> str:
    """The device as the leaderboard names it: the GPU's name, or the CPU with its threads."""
    prov = doc["provenance"]
    name = prov["device"]
    return name if prov["device_type"] == "cuda" or "thread" in name else f"{name}, {prov['threads']} threads"


def budget(doc: dict[str, Any]) -> str:
    """The budget, saying a quick budget on the CPU is one (a GPU row with the paper's schedule is not)."""
    b = doc["budget"]
    name = b["name"] if not b["name"].isdigit() else f"{b['name']} iterations"
    cpu = doc["provenance"]["device_type"] == "cpu"
    return f"{name}{' (CPU)' if cpu and b['name'] == 'quick' else ''}"


def reproduced(doc: dict[str, Any]) -> str:
    """Whether ``mtbench reproduce --record`` re-ran the result and got its numbers back: the latest verdict, its
    date and how many re-runs were recorded; ``-`` when none was."""
    runs = doc["reproduced"]
    if not runs:
        return "-"
    last = runs[-1]
    how = "yes" if last["verdict"] == "REPRODUCED" else "DIFFERS"
    return f"{how}, {last['at'][:10]}" + (f" ({len(runs)} re-runs)" if len(runs) > 1 else "")


def frame(g: Group, fraction: float = FRACTION) -> pd.DataFrame:
    """The group's ranked table as display strings, one row per result file."""
    from mtbench.board.labels import label

    best = g.entries[0].doc
    rows = []
    for rank, e in enumerate(g.entries, 1):
        doc = e.doc
        acc, fit = doc["accuracy"], doc["fit"]
        d_mean, d_ci, p = paired(doc, best)
        step, ms = adaptation_speed(doc, fraction)
        init_s = doc["init"]["fit_seconds"] if doc["init"] else 0.0
        rows.append({
            "rank": rank,
            "method": label(doc) + (" [submission]" if doc["submission"] else ""),
            "accuracy ± 95% CI": f"{acc['mean']:.4f} ± {acc['ci95']:.4f}",
            "vs best (paired)": "-" if rank == 1 else f"{d_mean:+.4f} ± {d_ci:.4f} (p={p:.2g}{', *' if p < 0.05 else ''})",
            f"step to {fraction:.0%}": step,
            f"ms to {fraction:.0%}": f"{ms:.1f}",
            "fit s": f"{fit['seconds'] + init_s:.0f}",
            "fit tasks/s": f"{fit['tasks_per_s']:.1f}" if fit["iterations"] else "-",
            "eval episodes/s": f"{doc['evaluation']['tasks_per_s']:.1f}",
            "peak MiB": f"{peak_mib(doc):.0f}",
            "device": device(doc),
            "budget": budget(doc),
            "reproduced": reproduced(doc),
            "file": e.path.name,
        })
    return pd.DataFrame(rows)


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


LEGEND = ("vs best: paired difference to rank 1 over the same episodes/trials, mean ± 95% CI, p from the normal "
          "approximation; * = significant at 5%. step/ms to {f:.0%}: the first reported adaptation step whose mean "
          "accuracy reaches {f:.0%} of the final accuracy, and the time inside adapt to get there. fit s includes the "
          "first stage of a pipeline. peak MiB: the larger of fit and evaluation (GPU: allocated; CPU: process RSS). "
          "(CPU) marks a quick-budget row run on the CPU. reproduced: the latest re-run recorded by mtbench reproduce "
          "--record (yes: its per-episode accuracies came back), - when none was.")


def render(groups: list[Group], fraction: float = FRACTION) -> str:
    """Every group's table as aligned text, with its title and the legend."""
    parts = [f"{g.title}\n\n{frame(g, fraction).to_string(index=False)}" for g in groups]
    return "\n\n".join(parts) + "\n\n" + LEGEND.format(f=fraction)


def render_board(b: Board, fraction: float = FRACTION, fmt: str = "text") -> str:
    """The board as ``mtbench leaderboard`` prints it: every group's table (aligned text or Markdown), the legend,
    then the files left out, with why."""
    if fmt == "markdown":
        text = "\n\n".join(f"### {g.title}\n\n{markdown(frame(g, fraction))}" for g in b.groups) \
            + "\n\n" + LEGEND.format(f=fraction)
    else:
        text = render(b.groups, fraction)
    note = left_out_note(b.left_out, markdown=fmt == "markdown")
    return text + (f"\n\n{note}" if note else "")
