"""The leaderboard: result files grouped into rankable sets and ranked, with the figures users compare.

Results are ranked together only when they were scored on the very same draws under the same
result schema: the group key is (dataset, setting, ``episodes_sha``, ``schema_version``). Within a
group, the results of one configuration that differ only by their training seed (``fit.seed``) form
one :class:`Row` (see :func:`configuration`), whatever CPU ran each seed (:func:`joined_across_cpus`: accuracy
does not depend on the CPU; a GPU's results form rows of their own): its accuracy is the mean over the seeds,
with a 95 % CI that counts the variance between seeds as well as between episodes
(:func:`mtbench.core.metrics.seed_mean_ci95`; one seed: the episode CI of the result). Rows are ranked
by mean accuracy; each carries its paired difference to the best row over the shared episodes (mean,
95 % CI with both rows' seed variance, two-sided p-value: :func:`mtbench.core.metrics.paired_seed_difference`),
its adaptation speed (the first reported adaptation step whose mean accuracy reaches ``fraction`` of
the row's final accuracy, and the milliseconds ``adapt`` took to get there), fit time and
throughput, peak memory and the device they were measured on (timings: means per fit over the row's seeds that
ran on that device, :attr:`Row.timed`; a seed run elsewhere keeps its own timings in the per-seed table).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from mtbench.core.errors import UserError
from mtbench.core.metrics import Interval, p_text, paired_seed_difference, seed_mean_ci95
from mtbench.board.labels import budget, distinct_labels, fit_seeded, hparams_as_ran, init_hparams_as_ran
from mtbench.results import partial_fit, setting_name
from mtbench.results.layout import leaderboard_files
from mtbench.results.screen import LeftOut, screen

FRACTION = 0.95  # adaptation speed: steps / ms to reach this fraction of the final accuracy
MIB = 2 ** 20


@dataclass(frozen=True)
class Entry:
    path: Path
    doc: dict[str, Any]


def fit_seed(doc: dict[str, Any]) -> int:
    """The training seed of a result (``fit.seed``; before it was recorded, the fit was seeded by the protocol's)."""
    return doc["fit"].get("seed", doc["protocol"]["seed"])


def _recipe(init: dict[str, Any] | None) -> dict[str, Any] | None:
    """A checkpoint by how it was made (method and its version, hparams as they ran, data, budget...), not by its
    bytes or its fit seed: another seed of the first stage gives another file, and is another seed of the same row.
    A result that did not record the version (``null``, before schema 6) is never joined with one that did."""
    if init is None:
        return None
    kept = {k: v for k, v in init.items()
            if k not in ("path", "sha256", "fit_seconds", "fit_seed", "git_commit", "init")}
    return {**kept, "hparams": init_hparams_as_ran(init), "init": _recipe(init["init"])}


def configuration(doc: dict[str, Any], any_cpu: bool = False) -> str:
    """What the results of one leaderboard row share, everything that ran but the training seed: the method
    (name, version, variant, hparams), dataset and source, the protocol with its draws, the budget's name and
    iterations, the checkpoint's recipe, the submitted file, precision, compilation, and the device (with its
    threads) the timings come from; with ``any_cpu``, a CPU result's device is any CPU (see
    :func:`joined_across_cpus`)."""
    prov, sub = doc["provenance"], doc["submission"]
    return json.dumps({
        "method": hparams_as_ran(doc["method"], prov["device_type"]), "dataset": doc["dataset"],
        "source": doc["source"], "protocol": doc["protocol"],
        "budget": {**doc["budget"], **({"reached": doc["fit"]["iterations"]} if partial_fit(doc) else {})},
        "init": _recipe(doc["init"]), "submission": sub and sub["source_sha256"],
        "precision": prov["precision"], "compile": prov["compile"],
        "device": "cpu" if any_cpu and prov["device_type"] == "cpu" else device(doc),
    }, sort_keys=True)


@dataclass(eq=False)
class Row:
    """One leaderboard row: the results of one :func:`configuration` with distinct training seeds, by seed."""

    entries: list[Entry]

    @property
    def doc(self) -> dict[str, Any]:
        """The first seed's result: what the row's results share (method, data, budget...)."""
        return self.entries[0].doc

    @cached_property
    def timed(self) -> list[Entry]:
        """The results whose timings the row shows: those of the device that ran most of its seeds (a tie: the
        first seed's device). Timings of two CPUs are not averaged; accuracy is over every seed."""
        devices = [device(e.doc) for e in self.entries]
        shown = max(dict.fromkeys(devices), key=devices.count)
        return [e for e, d in zip(self.entries, devices) if d == shown]

    @property
    def path(self) -> Path:
        return self.entries[0].path

    @property
    def seeds(self) -> list[int]:
        return [fit_seed(e.doc) for e in self.entries]

    def table(self) -> list[list[float]]:
        """The per-episode accuracies, a row per seed (the same episodes in each)."""
        return [e.doc["accuracy"]["per_episode"] for e in self.entries]

    @cached_property
    def accuracy(self) -> Interval:
        """Mean over seeds and episodes, and its 95 % CI (:func:`mtbench.core.metrics.seed_mean_ci95`)."""
        return seed_mean_ci95(self.table())

    def shape(self) -> str:
        """``3 seeds × 600 episodes``; ``1 seed × 600 episodes (single-seed)`` for one fit, ``600 episodes (nothing
        fitted)`` for a method no fit seed changes (transfer: trials)."""
        n, what = len(self.entries), "trials" if self.doc["protocol"]["kind"] == "transfer" else "episodes"
        if n == 1 and not fit_seeded(self.doc):
            return f"{len(self.table()[0])} {what} (nothing fitted)"
        return (f"{n} seeds × {len(self.table()[0])} {what}" if n > 1
                else f"1 seed × {len(self.table()[0])} {what} (single-seed)")

    def mean_of(self, value: Callable[[dict[str, Any]], float]) -> float:
        """The mean of ``value(doc)`` (a timing per fit) over the results on the row's timing device (:attr:`timed`)."""
        return sum(value(e.doc) for e in self.timed) / len(self.timed)

    def curve(self) -> tuple[list[int], list[float], list[float]]:
        """Adaptation steps, mean accuracy (over the seeds) and cumulative ms inside ``adapt`` at each (over the
        seeds on the row's timing device, :attr:`timed`)."""
        docs, timed = [e.doc for e in self.entries], [e.doc for e in self.timed]
        steps = [s["step"] for s in docs[0]["accuracy"]["by_step"]]
        acc = [sum(d["accuracy"]["by_step"][i]["mean"] for d in docs) / len(docs) for i in range(len(steps))]
        ms = [sum(d["adaptation"]["ms_by_step"][i] for d in timed) / len(timed) for i in range(len(steps))]
        return steps, acc, ms

    def timing_device(self) -> str:
        """The device the row's timings come from; when some seeds ran on another CPU, how many fits the timings
        cover (the table of fits names the others' CPUs)."""
        shown, n, of = device(self.timed[0].doc), len(self.timed), len(self.entries)
        return f"{shown}, timings of {n} of {of} fits" if n < of else shown


def rows(entries: list[Entry], any_cpu: bool = False) -> list[Row]:
    """``entries`` as leaderboard rows: one row per :func:`configuration` (``any_cpu`` passed on), holding one
    result per training seed.
    A seed that repeats (a re-run of the same configuration and seed that scored differently, e.g. at another
    commit) opens a further row of that configuration: each result, oldest first, joins the first row
    without its seed. Rows come in no particular order."""
    by_config: dict[str, list[list[Entry]]] = {}
    for e in sorted(entries, key=lambda e: (e.doc["provenance"]["timestamp"], e.path.name)):
        found = by_config.setdefault(configuration(e.doc, any_cpu), [])
        row = next((r for r in found if fit_seed(e.doc) not in {fit_seed(x.doc) for x in r}), None)
        if row is None:
            found.append(row := [])
        row.append(e)
    return [Row(sorted(r, key=lambda e: (fit_seed(e.doc), e.path.name))) for rs in by_config.values() for r in rs]


def joined_across_cpus(board_rows: list[Row]) -> list[Row]:
    """Rows of one group (:func:`rows`) with those that differ only by the CPU they ran on joined where their
    training seeds differ: accuracy does not depend on the CPU that fitted it (the joined row shows the timings of
    one device, :attr:`Row.timed`). A seed run on two CPUs keeps its rows apart, as a rerun is kept apart; the
    rows over the most seeds, then the newest, join first; a GPU's results stay apart."""
    merged: list[tuple[str, list[Entry]]] = []

    def order(r: Row) -> tuple[int, str]:
        return len(r.entries), max(e.doc["provenance"]["timestamp"] for e in r.entries)

    for r in sorted(board_rows, key=order, reverse=True):
        key, seeds = configuration(r.entries[0].doc, any_cpu=True), {fit_seed(e.doc) for e in r.entries}
        into = next((es for k, es in merged if k == key and not seeds & {fit_seed(e.doc) for e in es}), None)
        if into is None:
            merged.append((key, list(r.entries)))
        else:
            into.extend(r.entries)
    return [rows(es, any_cpu=True)[0] for _, es in merged]


@dataclass
class Group:
    """Results that share their draws: ``rows`` ranked best first."""

    dataset: str
    setting: str
    sha: str
    schema: int
    rows: list[Row]

    @property
    def entries(self) -> list[Entry]:
        """Every result of the group, row by row."""
        return [e for r in self.rows for e in r.entries]

    @property
    def title(self) -> str:
        p = self.entries[0].doc["protocol"]
        shape = (f"transfer, {p['train_images']} labelled / {p['test_images']} test images, {p['trials']} trials"
                 if p["kind"] == "transfer" else f"{p['ways']}-way {p['shots']}-shot, {p['episodes']} episodes")
        return f"{self.dataset} {self.setting} ({shape}; draws {self.sha[:12]})"


def group(results: list[tuple[Path, dict[str, Any]]]) -> list[Group]:
    """Rankable groups of ``results``, sorted by dataset, setting and sha; each ranked by accuracy."""
    groups: dict[tuple[str, str, str, int, int], list[Entry]] = {}
    for path, doc in results:
        # the number of scored episodes too: files that claim one sha with different counts (hand-made or edited
        # ones) cannot be paired, and rank apart rather than fail
        key = (doc["dataset"]["name"], setting_name(doc["protocol"]), doc["protocol"]["episodes_sha"],
               doc["schema_version"], len(doc["accuracy"]["per_episode"]))
        groups.setdefault(key, []).append(Entry(Path(path), doc))
    out = []
    for key, entries in sorted(groups.items()):
        ranked = sorted(joined_across_cpus(rows(entries)), key=lambda r: (-r.accuracy.mean, r.path.name))
        out.append(Group(*key[:4], ranked))
    return out


@dataclass
class Board:
    """The groups of a leaderboard folder (or a part of it) and the files it leaves out, with why."""

    groups: list[Group]
    left_out: list[LeftOut]
    has: list[str]  # the "<dataset> <setting>" of every valid result of the folder, filtered or not


def board(root: Path, dataset: str | None = None, setting: str | None = None,
          files: list[Path] | None = None) -> Board:
    """The result files under ``root`` (``<dataset>/<setting>/*.json``; or ``files``, found in a part of such a
    folder by :func:`mtbench.results.layout.board_files`), optionally filtered, screened as every board screens
    them (:func:`mtbench.results.screen.screen`: what fails ``mtbench validate``'s checks of the file, cannot be read
    or repeats a run is left out and listed) and grouped; a left-out file of a leaderboard folder counts in the
    folder it lies in, one of ``files`` is always listed."""
    if files is None and not root.is_dir():
        raise UserError(f"leaderboard folder {root} does not exist; give --leaderboards DIR")
    screened = screen(leaderboard_files(root) if files is None else files)
    picked = [(p, d) for p, d in screened.results
              if dataset in (None, d["dataset"]["name"]) and setting in (None, setting_name(d["protocol"]))]
    left = [x for x in screened.left_out if files is not None or (
        dataset in (None, x.path.parts[-3]) and setting in (None, x.path.parts[-2]))]
    return Board(group(picked), left, sorted({f"{d['dataset']['name']} {setting_name(d['protocol'])}"
                                               for _, d in screened.results}))


def shown(root: Path, dataset: str | None = None, setting: str | None = None,
          files: list[Path] | None = None) -> Board:
    """:func:`board`, where no result to show is an error that says what the folder has and what it left out."""
    found = board(root, dataset, setting, files)
    if not found.groups:
        left = "".join(f"; left out {x.path}: {x.reason}" for x in found.left_out[:3])
        left += f"; and {len(found.left_out) - 3} more left out" if len(found.left_out) > 3 else ""
        raise UserError(f"no results for dataset {dataset or 'any'}, protocol {setting or 'any'} under {root}; "
                        f"it has: {', '.join(found.has) or 'nothing'}{left}")
    return found


def load(root: Path, dataset: str | None = None, setting: str | None = None) -> list[Group]:
    """The groups of :func:`shown`."""
    return shown(root, dataset, setting).groups


def paired(row: Row, best: Row) -> tuple[float, float, float]:
    """``row``'s mean accuracy minus ``best``'s over their shared episodes, the 95 % CI half-width and the
    two-sided p-value of a zero difference: the paired episode differences of the seed-averaged accuracies,
    plus each row's seed variance (:func:`mtbench.core.metrics.paired_seed_difference`; between two
    single-seed rows, the normal approximation over episodes; 1.0 when every difference is 0)."""
    d = paired_seed_difference(row.table(), best.table())
    return d.mean, d.ci95, d.p_value()


def adaptation_speed(item: Row | dict[str, Any], fraction: float = FRACTION) -> tuple[int, float]:
    """(step, ms) of a row (its curve averaged over the seeds) or of one result: the first reported adaptation
    step whose mean accuracy reaches ``fraction`` of the final accuracy, and the cumulative time inside
    ``adapt`` up to it."""
    row = item if isinstance(item, Row) else Row([Entry(Path(), item)])
    steps, acc, ms = row.curve()
    target = fraction * acc[-1]
    i = next(i for i, a in enumerate(acc) if a >= target - 1e-12)
    return steps[i], ms[i]


def peak_mib(doc: dict[str, Any]) -> float:
    return max(doc["fit"]["peak_memory_bytes"], doc["evaluation"]["peak_memory_bytes"]) / MIB


def fit_seconds(doc: dict[str, Any]) -> float:
    """The fit's wall time, a pipeline's first stage included."""
    return doc["fit"]["seconds"] + (doc["init"]["fit_seconds"] if doc["init"] else 0.0)


def device(doc: dict[str, Any]) -> str:
    """The device as the leaderboard names it: the GPU's name, or the CPU with its threads."""
    prov = doc["provenance"]
    name = prov["device"]
    return name if prov["device_type"] == "cuda" or "thread" in name else f"{name}, {prov['threads']} threads"


def reproduced(item: Row | dict[str, Any]) -> str:
    """Whether ``mtbench reproduce --record`` re-ran the result and got its numbers back: the latest verdict, its
    date and how many re-runs were recorded; ``-`` when none was. For a row of several seeds, how many of its
    fits have a latest re-run that reproduced (``2 of 3 fits yes``) and how many one that differed."""
    if isinstance(item, Row):
        if len(item.entries) == 1:
            return reproduced(item.doc)
        latest = [e.doc["reproduced"][-1]["verdict"] for e in item.entries if e.doc["reproduced"]]
        if not latest:
            return "-"
        yes = latest.count("REPRODUCED")
        differs = f", {len(latest) - yes} DIFFERS" if len(latest) > yes else ""
        return f"{yes} of {len(item.entries)} fits yes{differs}"
    runs = item["reproduced"]
    if not runs:
        return "-"
    last = runs[-1]
    how = "yes" if last["verdict"] == "REPRODUCED" else "DIFFERS"
    return f"{how}, {last['at'][:10]}" + (f" ({len(runs)} re-runs)" if len(runs) > 1 else "")


def frame(g: Group, fraction: float = FRACTION) -> pd.DataFrame:
    """The group's ranked table as display strings, one row per :class:`Row` (its files listed by seed)."""
    best, out, names = g.rows[0], [], distinct_labels([r.doc for r in g.rows])
    for rank, row in enumerate(g.rows, 1):
        doc = row.doc
        d_mean, d_ci, p = paired(row, best)
        step, ms = adaptation_speed(row, fraction)
        out.append({
            "rank": rank,
            "method": names[rank - 1] + (" [submission]" if doc["submission"] else ""),
            "accuracy ± 95% CI": f"{row.accuracy.mean:.4f} ± {row.accuracy.ci95:.4f}",
            "seeds × episodes": row.shape(),
            "vs best (paired)": "-" if rank == 1 else f"{d_mean:+.4f} ± {d_ci:.4f} ({p_text(p)})",
            f"step to {fraction:.0%}": step,
            f"ms to {fraction:.0%}": f"{ms:.1f}",
            "fit s": f"{row.mean_of(fit_seconds):.0f}",
            "fit tasks/s": f"{row.mean_of(lambda d: d['fit']['tasks_per_s']):.1f}" if doc["fit"]["iterations"] else "-",
            "eval episodes/s": f"{row.mean_of(lambda d: d['evaluation']['tasks_per_s']):.1f}",
            "peak MiB": f"{max(peak_mib(e.doc) for e in row.timed):.0f}",
            "device": row.timing_device(),
            "budget": budget(doc),
            "reproduced": reproduced(row),
            "file": ", ".join(e.path.name for e in row.entries),
        })
    return pd.DataFrame(out)


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


LEGEND = ("A row is every result of one configuration (method, hparams, data, protocol and draws, budget and "
          "iterations, checkpoint recipe, precision; a GPU's results apart from the CPUs', which join whatever CPU "
          "ran them) that differs only by the training seed (a fit stopped "
          "part-way by mtbench run --until is its own row, its budget marked partial): accuracy is the "
          "mean over its seeds, its 95% CI counts the variance between seeds as well as between episodes; a "
          "single-seed row's CI covers the test episodes only (nothing fitted: scratch, which no fit seed changes). "
          "vs best: paired difference to rank 1 over the same "
          "episodes/trials, mean ± 95% CI with both rows' seed variance (none for a single-seed row), p from the "
          "normal approximation (Student t with several seeds); * = significant at 5%. step/ms to {f:.0%}: the first reported adaptation step whose mean "
          "accuracy reaches {f:.0%} of the final accuracy, and the time inside adapt to get there. fit s includes the "
          "first stage of a pipeline; timings are means per fit over a row's seeds on the device it names "
          "(seeds run on another CPU: their own timings in the per-seed table). peak MiB: the larger of fit and "
          "evaluation, the largest over those seeds (GPU: allocated; CPU: process RSS). "
          "(CPU) marks a quick-budget row run on the CPU. reproduced: the latest re-run recorded by mtbench reproduce "
          "--record (yes: its per-episode accuracies came back), - when none was.")
