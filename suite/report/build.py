"""``mtbench report``: pages regenerated from the leaderboard folder alone, as Markdown and as HTML.

A report is the sequence of :data:`PAGES`. Each :class:`Page` reads its own part of the leaderboard
folder and returns :class:`Built` content: a list of blocks (:class:`Heading`, :class:`Para`,
:class:`Bullets`, :class:`Table`, :class:`Image`) and the SVG figures they show. The same blocks are
rendered to Markdown (``<page>.md``, read on GitHub) and to self-contained HTML (``<page>.html``:
inline CSS, figures by relative path), and ``index.md`` / ``index.html`` link to the pages. Both
renderers escape every piece of text, so a string from a JSON file always shows as text. Adding a
page means writing one function that returns :class:`Built` and listing it in :data:`PAGES`.

The report is a pure function of the input files: they are read in sorted order, no generation time
is written, and the SVG figures use a fixed hash salt and no date, so regenerating it gives
byte-identical files. Every file is rendered in memory first and only then written, each one
atomically, so a failure leaves the previous report as it was.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from mtbench.bench import record as benchcmd
from mtbench.core.atomic import atomic_write
from mtbench.board.compare import markdown
from mtbench.core.errors import UserError

FIGURES = "figures"


# -- content blocks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Code:
    """Inline code: a command or a path."""

    text: str


@dataclass(frozen=True)
class Link:
    """A link to another page of the report, by page name (``throughput``; ``index`` for the index)."""

    text: str
    page: str


Inline = Union[str, Code, Link]


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    parts: tuple[Inline, ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[tuple[Inline, ...], ...]


@dataclass(frozen=True, eq=False)
class Table:
    """A table of strings (format numbers before); every header and cell is escaped. In HTML the table gets
    the class ``css`` when given, and body row *i* the attribute ``data-file="keys[i]"`` when ``keys`` are."""

    frame: pd.DataFrame
    css: str = ""
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Image:
    """A figure of this report, ``src`` relative to the report folder (``figures/<name>.svg``)."""

    src: str
    alt: str


Block = Union[Heading, Para, Bullets, Table, Image]


@dataclass
class Built:
    """A page's content: a one-line ``summary`` for the index, its blocks, and its figures (file name -> SVG)."""

    summary: str
    blocks: list[Block]
    figures: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """One page: ``build`` reads the leaderboard folder and returns :class:`Built`, or ``None`` when the
    folder holds nothing for it (``wants`` then says what it would read)."""

    name: str
    title: str
    wants: str
    build: Callable[[Path], Built | None]


# -- Markdown --------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#~|$])")


def md_text(text: str) -> str:
    """``text`` as literal Markdown text on one line: Markdown punctuation backslash-escaped, HTML as entities."""
    return html.escape(_MD_SPECIAL.sub(r"\\\1", re.sub(r"\s+", " ", str(text))), quote=False)


def _inline(parts: Sequence[Inline], text: Callable[[str], str], code: Callable[[Code], str],
            link: Callable[[Link], str]) -> str:
    return "".join(code(p) if isinstance(p, Code) else link(p) if isinstance(p, Link) else text(p) for p in parts)


def _md_inline(parts: Sequence[Inline]) -> str:
    return _inline(parts, md_text, lambda c: f"`{c.text}`", lambda link: f"[{md_text(link.text)}]({link.page}.md)")


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {md_text(block.text)}"
    if isinstance(block, Para):
        return _md_inline(block.parts)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md_inline(item)}" for item in block.items)
    if isinstance(block, Table):
        return markdown(block.frame, md_text)
    return f"![{md_text(block.alt)}]({block.src})"


def to_markdown(title: str, blocks: Sequence[Block], nav: bool = True) -> str:
    """A Markdown page: a link back to the index (``nav``), the title, the blocks."""
    head = [NAV_MD] if nav else []
    return "\n\n".join([*head, f"# {md_text(title)}", *map(_md_block, blocks)]) + "\n"


# -- HTML ------------------------------------------------------------------------------------------
NAV_MD = "[mtbench reports](index.md)"
NAV_HTML = '<a href="index.html">mtbench reports</a>'
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; line-height: 1.5;
       max-width: 80rem; margin: 2rem auto; padding: 0 1rem; }
nav { margin-bottom: 1rem; }
.table { overflow-x: auto; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tbody tr:nth-child(even) { background: #f9fafb; }
code { background: #f6f8fa; padding: 0.1rem 0.3rem; border-radius: 4px; font-size: 0.9em; }
img { max-width: 100%; height: auto; }
""".strip()


def _html_inline(parts: Sequence[Inline]) -> str:
    return _inline(parts, html.escape, lambda c: f"<code>{html.escape(c.text)}</code>",
                   lambda link: f'<a href="{html.escape(link.page)}.html">{html.escape(link.text)}</a>')


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        return f"<p>{_html_inline(block.parts)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_html_inline(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    return f'<figure><img src="{html.escape(block.src)}" alt="{html.escape(block.alt)}"></figure>'


def _html_table(table: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in table.frame.columns)
    rows = []
    for i, row in enumerate(table.frame.itertuples(index=False)):
        key = f' data-file="{e(table.keys[i])}"' if table.keys else ""
        rows.append(f"<tr{key}>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>")
    css = f' class="{e(table.css)}"' if table.css else ""
    return (f'<div class="table">\n<table{css}>\n<thead>\n<tr>{head}</tr>\n</thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table>\n</div>")


def to_html(title: str, blocks: Sequence[Block], nav: bool = True) -> str:
    """A self-contained HTML page: inline CSS, no scripts, figures by relative path."""
    head = [f"<nav>{NAV_HTML}</nav>"] if nav else []
    body = "\n".join([*head, f"<h1>{html.escape(title)}</h1>", *map(_html_block, blocks)])
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n<main>\n{body}\n"
            f"</main>\n</body>\n</html>\n")


# -- figures ---------------------------------------------------------------------------------------
def svg(draw: Callable[[Any], None], size: tuple[float, float]) -> bytes:
    """An SVG of a figure that ``draw(fig)`` fills, the same bytes every time: a fixed hash salt, no date,
    text as paths, and no mathtext (a ``$`` in a name from a file stays a ``$``; so tick labels need plain
    formatters, not the log axis's default ``$10^{2}$``)."""
    style = {"svg.hashsalt": "mtbench-report", "svg.fonttype": "path", "text.parse_math": False,
             "font.family": "DejaVu Sans", "font.size": 9}
    with rc_context(style):
        fig = Figure(figsize=size)
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buf.getvalue()


def slugs(names: Sequence[str]) -> dict[str, str]:
    """A distinct file-name-safe slug per name (``CUDA NVIDIA H100 80GB HBM3`` -> ``cuda-nvidia-h100-80gb-hbm3``)."""
    out: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48].strip("-") or "x"
        slug, n = base, 2
        while slug in out.values():
            slug, n = f"{base}-{n}", n + 1
        out[name] = slug
    return out


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def _table(frame: pd.DataFrame, empty: str) -> Block:
    """``frame`` as a table, or the sentence ``empty`` when it has no rows."""
    return Table(frame) if len(frame) else Para((empty,))


# -- the throughput page ---------------------------------------------------------------------------
THROUGHPUT = "throughput"
Run = tuple[Path, dict[str, Any]]  # a bench file and its document


def _bench_runs(leaderboards: Path) -> list[Run]:
    return [(p, benchcmd.read(p)) for p in sorted((leaderboards / THROUGHPUT).glob("*.json"))]


def _latest(runs: list[Run]) -> dict[str, Run]:
    """The latest run (by provenance timestamp, then file name) on each device, by device name, sorted."""
    latest: dict[str, Run] = {}
    for path, doc in sorted(runs, key=lambda r: (r[1]["provenance"]["timestamp"], r[0].name)):
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
    return pd.DataFrame(rows).fillna("-") if rows else pd.DataFrame()


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


def _runs(runs: list[Run], latest: dict[str, Run]) -> pd.DataFrame:
    shown = {path for path, _ in latest.values()}
    rows = []
    for path, doc in sorted(runs, key=lambda r: (r[1]["machine"]["device_name"], r[1]["provenance"]["timestamp"],
                                                 r[0].name)):
        m, cfg = doc["machine"], doc["config"]
        rows.append({"file": path.name, "device": m["device_name"], "measured": doc["provenance"]["timestamp"],
                     "shown": "yes" if path in shown else "no (a later run on this device is)",
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
        Heading("Runs"),
        Table(_runs(runs, latest)),
    ]
    return Built(summary, blocks, figures)


PAGES: tuple[Page, ...] = (
    Page(THROUGHPUT, "Throughput", f"bench files (*.json) in {THROUGHPUT}/, written by `mtbench bench --out "
                                   f"<leaderboards>/{THROUGHPUT}/<device>_<UTC time>.json`", throughput_page),
)


# -- the report ------------------------------------------------------------------------------------
def all_pages(leaderboards: Path) -> list[Page]:
    """The leaderboard pages (one per results folder, :mod:`mtbench.report.boards`), then :data:`PAGES`."""
    from mtbench.report.boards import pages

    return [*pages(leaderboards), *PAGES]


def build(leaderboards: Path, pages: Sequence[Page] | None = None) -> dict[str, bytes]:
    """Every file of the report, by path relative to the report folder, rendered in memory; ``pages``
    defaults to :func:`all_pages`."""
    leaderboards = Path(leaderboards)
    if not leaderboards.is_dir():
        raise UserError(f"no leaderboard folder {leaderboards}; run mtbench report in the repository root, or "
                        f"give the folder with --leaderboards")
    if pages is None:
        pages = all_pages(leaderboards)
    built = [(page, b) for page in pages if (b := page.build(leaderboards)) is not None]
    if not built:
        wants = "; ".join(page.wants.replace("<leaderboards>", str(leaderboards)) for page in pages)
        raise UserError(f"nothing to report in {leaderboards}: no result files (<dataset>/<setting>/*.json, written "
                        f"by mtbench run, official or submit) and no {wants}")
    files: dict[str, bytes] = {}
    for page, b in built:
        files[f"{page.name}.md"] = to_markdown(page.title, b.blocks).encode()
        files[f"{page.name}.html"] = to_html(page.title, b.blocks).encode()
        files.update({f"{FIGURES}/{name}": data for name, data in b.figures.items()})
    from mtbench.report.boards import overview

    index: list[Block] = [
        Para(("Generated by ", Code("mtbench report"), " from the leaderboard folder alone; regenerate the pages "
              "rather than editing them.",)),
        *overview(leaderboards),
        Bullets(tuple((Link(page.title, page.name), f": {b.summary}") for page, b in built)),
    ]
    files["index.md"] = to_markdown("mtbench reports", index, nav=False).encode()
    files["index.html"] = to_html("mtbench reports", index, nav=False).encode()
    return files


def _generated(path: Path) -> bool:
    """Whether a page file in the report folder was written by a report (it opens with the report's navigation)."""
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return False
    return head.startswith(NAV_MD.encode()) or f"<nav>{NAV_HTML}</nav>".encode() in head


def write(files: dict[str, bytes], out: Path) -> list[Path]:
    """Write ``files`` under ``out``, each atomically; remove the figures and generated pages an earlier
    report had and this one does not (other files, such as a README, stay). Returns the written paths."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the report")
    try:
        written = [atomic_write(out / rel, lambda tmp, data=data: tmp.write_bytes(data))
                   for rel, data in sorted(files.items())]
        stale = [p for p in sorted((out / FIGURES).glob("*.svg")) if f"{FIGURES}/{p.name}" not in files]
        stale += [p for ext in ("*.md", "*.html") for p in sorted(out.glob(ext))
                  if p.name not in files and _generated(p)]
        for path in stale:
            path.unlink()
    except OSError as exc:
        raise UserError(f"cannot write the report into {out} ({exc.strerror}); choose another folder with --out") \
            from None
    return written


def report(leaderboards: Path, out: Path) -> list[Path]:
    """Regenerate the report in ``out`` from ``leaderboards``; the written paths."""
    return write(build(leaderboards), out)
