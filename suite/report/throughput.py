"""The report's throughput page: the ``mtbench bench`` files in ``<leaderboards>/throughput/``."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from mtbench.bench import record as benchcmd
from mtbench.results.layout import THROUGHPUT, throughput_folder
from mtbench.report.blocks import FIGURES, Block, Built, Code, Heading, Image, Para, Table, slugs, svg

Run = tuple[Path, dict[str, Any]]  # a bench file and its document


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def _table(frame: pd.DataFrame, empty: str) -> Block:
    """``frame`` as a table, or the sentence ``empty`` when it has no rows."""
    return Table(frame) if len(frame) else Para((empty,))


def _bench_runs(leaderboards: Path) -> list[Run]:
    return [(p, benchcmd.read(p)) for p in sorted(throughput_folder(leaderboards).glob("*.json"))]


def _by_time(runs: list[Run]) -> list[Run]:
    return sorted(runs, key=lambda r: (r[1]["provenance"]["timestamp"], r[0].name))


def _latest(runs: list[Run]) -> dict[str, Run]:
    """The latest run (by provenance timestamp, then file name) on each device, by device name, sorted."""
    latest: dict[str, Run] = {}
    for path, doc in _by_time(runs):
        latest[doc["machine"]["device_name"]] = (path, doc)
    return dict(sorted(latest.items()))


def _orderer(latest: dict[str, Run]) -> Callable[[dict[str, Any]], tuple[int, int]]:
    """A sort key for measurement rows: ``mtbench bench``'s order of (method, measurement), then the meta-batch."""
    rank: dict[tuple[str, str], int] = {}
    for _, doc in latest.values():
        for r in doc["measurements"]:
            rank.setdefault((r["method"], r["measurement"]), len(rank))
    return lambda r: (rank[(r["method"], r["measurement"])], r["meta_batch"] or 0)


def _malloc_text(malloc: dict[str, Any]) -> str:
    parts = ["tuned in process"] if malloc["tuned_in_process"] else []
    parts += [f"{k}={v}" for k, v in sorted(malloc["env"].items())]
    return "; ".join(parts) or "glibc defaults"


def _measurements(latest: dict[str, Run]) -> pd.DataFrame:
    order = _orderer(latest)
    rows = sorted(((device, r) for device, (_, doc) in latest.items() for r in doc["measurements"]),
                  key=lambda dr: (order(dr[1]), dr[0]))
    return pd.DataFrame([{"method": r["method"], "measurement": r["measurement"],
                          "meta-batch": str(r["meta_batch"] or "-"), "device": device,
                          "tasks/s": f"{r['tasks_per_s']:,.1f}", "images/s": f"{r['images_per_s']:,.0f}",
                          "ms/step": f"{r['ms_per_step']:,.2f}", "peak memory": benchcmd.memory_text(r)}
                         for device, r in rows])


MAML_VARIANTS = {"maml-bmm": "bmm", "maml-vmap": "vmap", "maml-loop-graph": "loop in a CUDA graph",
                 "maml-loop": "reference loop"}


def _maml(latest: dict[str, Run]) -> pd.DataFrame:
    """Per device and meta-batch: tasks/s of each MAML variant and its ratio to the eager reference loop."""
    rows = []
    for device, (_, doc) in latest.items():
        ratio = doc["ratios"]
        over = ratio.get("maml_over_loop") or {ratio.get("maml_batched_variant", "vmap"): ratio["maml_batched_over_loop"]}
        rate = {(r["method"], str(r["meta_batch"])): r["tasks_per_s"] for r in doc["measurements"]}
        batches = sorted({b for by in over.values() for b in by}, key=lambda b: (len(b), b))
        for batch in batches:
            row = {"device": device, "meta-batch": batch}
            for method, name in MAML_VARIANTS.items():
                if (method, batch) in rate:
                    x = over.get(method.removeprefix("maml-"), {}).get(batch)
                    row[f"{name} tasks/s"] = f"{rate[(method, batch)]:,.1f}" + (f" ({x:.2f}x)" if x else "")
            rows.append(row)
    return pd.DataFrame(rows).astype(object).fillna("-") if rows else pd.DataFrame()


def _protonet(latest: dict[str, Run]) -> pd.DataFrame:
    rows = []
    for device, (_, doc) in latest.items():
        ratio = doc["ratios"]
        if "protonet_eval_overhead" not in ratio:
            continue
        ms = {r["measurement"]: r["ms_per_step"] for r in doc["measurements"] if r["method"] == "protonet"}
        target = ratio.get("protonet_eval_overhead_target")
        rows.append({"device": device, "evaluator ms": f"{ms.get('evaluate', math.nan):,.1f}",
                     "bare forward ms": f"{ms.get('forward', math.nan):,.1f}",
                     "evaluator / forward": f"{ratio['protonet_eval_overhead']:.2f}x",
                     "target (CPU)": f"≤ {target}x" if target is not None else "-"})
    return pd.DataFrame(rows)


def _evaluation_rows(runs: list[Run]) -> dict[tuple[str, str], tuple[Path, dict[str, str]]]:
    """Each evaluation ratio on each device from the newest file that measured it, by (device, what): a run of
    ``mtbench bench --evaluation`` for some methods leaves the others' ratios to the files that measured them."""
    newest: dict[tuple[str, str], tuple[Path, dict[str, str]]] = {}
    for path, doc in _by_time(runs):
        device, ratio = doc["machine"]["device_name"], doc["ratios"]
        one_rate = ratio.get("evaluation_over_one_rate_bound", {})
        rows = []
        for name, x in ratio.get("evaluation_over_work_bound", {}).items():
            # files before 2026-12-03 timed every FLOP at the faster pass's rate: their ratio is that one's
            rows.append({"what": f"{name} evaluation / its work-bound time", "ratio": f"{x:.2f}x",
                         "every FLOP at the forward pass's rate": (f"{one_rate[name]:.2f}x" if name in one_rate
                                                                   else "(the ratio beside)"),
                         "target": f"≤ {ratio.get('work_bound_target', '-')}x"})
        if "maml_eval_last_over_peer" in ratio:
            rows.append({"what": "MAML evaluation, last step scored / learn2learn-style loop (time)",
                         "ratio": f"{ratio['maml_eval_last_over_peer']:.2f}x", "target": "≤ 1x"})
        for batch, x in ratio.get("maml_train_over_peer", {}).items():
            rows.append({"what": f"MAML training as run does it / learn2learn-style loop (tasks/s, meta-batch {batch})",
                         "ratio": f"{x:.2f}x", "target": "≥ 1x"})
        for row in rows:
            newest[(device, row["what"])] = (path, {"device": device, **row, "episodes": str(doc["config"]["episodes"]),
                                                    "file": path.name})
    return dict(sorted(newest.items()))


def _evaluation(runs: list[Run]) -> pd.DataFrame:
    """Each evaluated method's time over its work-bound time, and MAML against the learn2learn-style loop."""
    columns = ["device", "what", "ratio", "every FLOP at the forward pass's rate", "target", "episodes", "file"]
    rows = [row for _, row in _evaluation_rows(runs).values()]
    return pd.DataFrame(rows, columns=columns).astype(object).fillna("-") if rows else pd.DataFrame()


def _runs(runs: list[Run], latest: dict[str, Run]) -> pd.DataFrame:
    shown = {path for path, _ in latest.values()}
    ratios: dict[Path, list[str]] = {}
    for (_, what), (path, _) in _evaluation_rows(runs).items():
        ratios.setdefault(path, []).append(what.split(" ")[0])
    rows = []
    for path, doc in sorted(runs, key=lambda r: (r[1]["machine"]["device_name"], r[1]["provenance"]["timestamp"],
                                                 r[0].name)):
        m, cfg = doc["machine"], doc["config"]
        partly = f"its evaluation ratios of {', '.join(sorted(set(ratios[path])))}" if path in ratios else None
        rows.append({"file": path.name, "device": m["device_name"], "measured": doc["provenance"]["timestamp"],
                     "shown": "yes" if path in shown else partly or "no (a later run on this device is)",
                     "torch": m["torch"], "git commit": benchcmd.commit_text(m), "threads": str(m["threads"]),
                     "malloc": _malloc_text(m["malloc"]), "data": cfg["data"],
                     "tasks": f"{benchcmd.tasks_text(cfg)}; {cfg['episodes']} evaluation episodes"})
    return pd.DataFrame(rows)


def _tasks_figure(latest: dict[str, Run]) -> tuple[Callable[[Any], None], tuple[float, float]]:
    """Horizontal bars: tasks/s of each measurement (rows) on each device (colours), log x axis; and its size."""
    key = _orderer(latest)
    labels: dict[tuple[int, int], str] = {}
    for _, doc in latest.values():
        for r in doc["measurements"]:
            labels.setdefault(key(r), benchcmd.label(r))
    order = sorted(labels)
    devices = list(latest)
    height = 0.8 / len(devices)

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        values: list[float] = []
        for j, device in enumerate(devices):
            rate = {key(r): r["tasks_per_s"] for r in latest[device][1]["measurements"]}
            bars = [(i + (j - (len(devices) - 1) / 2) * height, rate[k]) for i, k in enumerate(order)
                    if _positive(rate.get(k, math.nan))]
            ax.barh([y for y, _ in bars], [x for _, x in bars], height=height, label=device, color=f"C{j % 10}")
            for y, x in bars:
                ax.text(x, y, f" {x:,.1f}", va="center", fontsize=7)
                values.append(x)
        ax.set_xscale("log")
        if values:  # room for the value labels at the ends of the bars
            ax.set_xlim(min(values) / 2, max(values) * 4)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}" if x >= 1 else f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(range(len(order)), [labels[k] for k in order])
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.set_xlabel("tasks per second (log scale)")
        ax.set_title("Throughput per measurement, latest run on each device")
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.08 - 0.5 / len(order)), frameon=False)

    return draw, (8.0, 1.0 + len(order) * (0.15 + 0.2 * len(devices)))


def _maml_figure(device: str, doc: dict[str, Any]) -> Callable[[Any], None] | None:
    """Tasks/s against the meta-batch of each MAML variant on one device; None without MAML rows."""
    lines = {}
    for method, name in MAML_VARIANTS.items():
        points = sorted((r["meta_batch"], r["tasks_per_s"]) for r in doc["measurements"]
                        if r["method"] == method and r["meta_batch"] and _positive(r["tasks_per_s"]))
        if points:
            lines[name] = points
    if not lines:
        return None
    batches = sorted({b for points in lines.values() for b, _ in points})

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        for name, points in lines.items():
            ax.plot([b for b, _ in points], [x for _, x in points], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_xlabel("meta-batch (tasks per meta-step)")
        ax.set_ylabel("tasks per second")
        ax.set_title(f"MAML meta-steps on {device}")
        ax.grid(alpha=0.3)
        ax.legend()

    return draw


def throughput_page(leaderboards: Path) -> Built | None:
    """The ``mtbench bench`` files in ``<leaderboards>/throughput/``: the latest run on each device."""
    runs = _bench_runs(leaderboards)
    if not runs:
        return None
    latest = _latest(runs)
    figures: dict[str, bytes] = {}
    tasks_image: list[Block] = []
    if any(doc["measurements"] for _, doc in latest.values()):
        figures[f"{THROUGHPUT}-tasks.svg"] = svg(*_tasks_figure(latest))
        tasks_image = [Image(f"{FIGURES}/{THROUGHPUT}-tasks.svg",
                             "tasks per second of each measurement on each device, log scale")]
    maml_images = []
    slug = slugs(list(latest))
    for device, (_, doc) in latest.items():
        draw = _maml_figure(device, doc)
        if draw:
            name = f"{THROUGHPUT}-maml-{slug[device]}.svg"
            figures[name] = svg(draw, (6, 3.5))
            maml_images.append(Image(f"{FIGURES}/{name}", f"MAML tasks/s against the meta-batch on {device}"))
    n_dev, n_files = len(latest), len(runs)
    summary = f"{n_dev} device{'s' * (n_dev > 1)}, {n_files} bench file{'s' * (n_files > 1)}"
    blocks: list[Block] = [
        Para(("Training and evaluation throughput measured by ", Code("mtbench bench"), ", one JSON file per run in ",
              Code(f"leaderboards/{THROUGHPUT}/"), f" ({summary}). The tables and figures show the latest run on "
              "each device; every file is listed under Runs, with the tasks it measured on. Rates use the median "
              "step time.")),
        *tasks_image,
        Heading("Measurements"),
        Para(("Peak memory: CUDA's maximum allocated over the timed steps on a GPU; on the CPU the process's peak "
              "RSS so far, which includes the measurements before it.",)),
        _table(_measurements(latest), "No measurements."),
        Heading("MAML: batched meta-batches against the per-task reference loop"),
        Para(("Tasks per second of second-order MAML meta-steps (Omniglot 5-way 1-shot, Conv4) computed as one "
              "network with per-task weights (", Code("bmm"), "), through ", Code("torch.func.vmap"),
              ", or by the textbook per-task ", Code("autograd.grad(create_graph=True)"), " loop, eager; on CUDA "
              "the suite's own run as CUDA graphs, as ", Code("mtbench run"), " does. In brackets: tasks/s over the "
              "reference loop's, same meta-gradient (checked in float64).")),
        *maml_images,
        _table(_maml(latest), "No MAML measurements."),
        Heading("ProtoNet: evaluator overhead"),
        Para(("Time of the evaluator on the fixed episodes over the bare forward passes it needs.",)),
        _table(_protonet(latest), "No ProtoNet evaluator measurements."),
        Heading("Evaluation against the work it must do"),
        Para(("From ", Code("mtbench bench --evaluation"), ": each method's evaluation time over its work-bound time "
              "(its FLOPs, counted by ", Code("torch.utils.flop_counter"), ", over the Conv4's best FLOP rate on that "
              "device), and MAML against a learn2learn-style per-episode loop in plain PyTorch. Each ratio is the newest "
              "measurement of it on its device, from the file named beside it (a run may time some methods only); "
              "ratios are comparable within one file, whose methods ran side by side.",)),
        _table(_evaluation(runs), "No evaluation measurements."),
        Heading("Runs"),
        Table(_runs(runs, latest)),
    ]
    return Built(summary, blocks, figures)
