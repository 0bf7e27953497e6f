"""Generated pages: blocks, Markdown/HTML/SVG renderers, the throughput and leaderboard pages."""
