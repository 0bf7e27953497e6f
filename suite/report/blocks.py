"""The report's building blocks: content blocks, their Markdown and HTML renderers, and SVG figures.

A page is a list of blocks (:class:`Heading`, :class:`Para`, :class:`Bullets`, :class:`Table`,
:class:`Image`) with inline :class:`Code` and :class:`Link` parts. The same blocks render to Markdown
(read on GitHub) and to self-contained HTML (inline CSS, figures by relative path); both renderers
escape every piece of text, so a string from a JSON file always shows as text. :func:`svg` draws a
figure to the same bytes every time.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from mtbench.board.leaderboard import markdown

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
#: a coordinate as matplotlib writes it, with 6 decimals
_COORDINATE = re.compile(rb"-?\d+\.\d{4,}")


def svg(draw: Callable[[Any], None], size: tuple[float, float]) -> bytes:
    """An SVG of a figure that ``draw(fig)`` fills, the same bytes every time: a fixed hash salt, no date,
    text as paths, and no mathtext (a ``$`` in a name from a file stays a ``$``; so tick labels need plain
    formatters, not the log axis's default ``$10^{2}$``). Coordinates are rounded to 0.001 pt: written with 6
    decimals, a log axis's grid line came out 41.512812 on one CPU and 41.512813 on another (the log scale's
    arithmetic differs in its last bits between CPUs), so the committed report changed with the machine that
    rebuilt it."""
    style = {"svg.hashsalt": "mtbench-report", "svg.fonttype": "path", "text.parse_math": False,
             "font.family": "DejaVu Sans", "font.size": 9}
    with rc_context(style):
        fig = Figure(figsize=size)
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return _COORDINATE.sub(lambda m: b"%.3f" % float(m.group()), buf.getvalue())


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
