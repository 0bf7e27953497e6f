"""Generated pages: blocks, Markdown/HTML/SVG renderers (``blocks``), the leaderboard pages (``boards``), the
throughput page (``throughput``), and the report that puts them together (``build``)."""

from mtbench.report.build import report

__all__ = ["report"]
