"""Line numbers for mistakes in a plan or sweep file: tomllib gives them for syntax, these for meaning.

:func:`mtbench.board.official.parse` names the place of a problem as a path (``settings[1].entries[0]``,
``settings[0]: unknown key(s) wyas``, ``--ways must be ...``); :func:`locate` finds the line of that key in
the TOML text, or of its table when the key is missing. :func:`checked_table` is the check of a table's keys
that names such a place.
"""

from __future__ import annotations

import re
from typing import Any

from mtbench.core.errors import UserError

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_\-\"' .]+?)\s*\]\]?\s*(#.*)?$")
_PLACE = re.compile(r"^(?:(?P<table>settings)\[(?P<index>\d+)\](?P<inner>\.entries)?[^:]*|(?P<named>groups))?:?\s*")


def key_line(text: str, path: list[str | int]) -> int | None:
    """The 1-based line of ``path`` (``["budget"]``, ``["settings", 2, "ways"]``, ``["groups", "tiny"]``) in the
    TOML ``text``: the key's line, else its table's header, else ``None``."""
    lines = text.splitlines()
    headers = [(i, m.group(2).strip("\"'"), m.group(1) == "[[") for i, line in enumerate(lines)
               if (m := _HEADER.match(line))]
    start, end, fallback = 0, headers[0][0] if headers else len(lines), None
    rest = list(path)
    tables = [h[0] for h in headers if h[1] == (rest[0] if rest else None) and not h[2]]
    if len(rest) >= 2 and isinstance(rest[1], int):
        arrays = [h[0] for h in headers if h[1] == rest[0] and h[2]]
        if rest[1] >= len(arrays):
            return None
        start, rest, fallback = arrays[rest[1]], rest[2:], arrays[rest[1]] + 1
    elif tables:
        start, rest, fallback = tables[0], rest[1:], tables[0] + 1
    if fallback is not None:
        end = next((h[0] for h in headers if h[0] > start), len(lines))
    if not rest:
        return fallback
    key = re.escape(str(rest[0]))
    for i in range(start, end):
        if re.match(rf"^\s*[\"']?{key}[\"']?\s*=", lines[i]):
            return i + 1
    return next((h[0] + 1 for h in headers if h[1] == rest[0]), fallback)


def locate(text: str, place: str) -> int | None:
    """The line a problem of :func:`mtbench.board.official.parse` is about, from its message without the file
    name (e.g. ``settings[0]: unknown key(s) wyas (allowed: ...)``)."""
    m = _PLACE.match(place)
    detail = place[m.end():] if m else place
    unknown = re.match(r"unknown key\(s\) ([^,; ]+)", detail)
    option = re.search(r"--([a-z][a-z-]*)", detail)
    if m and m.group("table"):
        index = int(m.group("index"))
        if m.group("inner") or "group" in detail:
            key = "entries"
        elif unknown:
            key = unknown.group(1)
        elif option:
            key = option.group(1).replace("-", "_")
        else:
            key = None
        found = key_line(text, ["settings", index, key] if key else ["settings", index])
        return found or key_line(text, ["settings", index])
    if m and m.group("named"):
        return key_line(text, ["groups"] + ([unknown.group(1)] if unknown else []))
    if unknown:
        return key_line(text, [unknown.group(1)])
    missing = re.match(r"missing ([^,; ]+)", detail)
    return key_line(text, [missing.group(1)]) if missing else None


def with_line(message: str, source: str, text: str) -> str:
    """``message`` (which starts with ``source``) with the line it is about: ``plan.toml line 7: ...``."""
    prefix = f"{source}: "
    if not message.startswith(prefix):
        return message
    line = locate(text, message[len(prefix):])
    return f"{source} line {line}: {message[len(prefix):]}" if line else message


def checked_table(where: str, table: Any, allowed: set[str] | None = None,
                  required: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``table``, checked to be a TOML table with only ``allowed`` keys (any when ``None``) and ``required``; else a
    :class:`UserError` naming ``where``, the place :func:`locate` finds the line of."""
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table, got {table!r}")
    if allowed is None:
        return table
    unknown, lacking = set(table) - allowed, required - set(table)
    if unknown or lacking:
        problems = ([f"unknown key(s) {', '.join(sorted(unknown))}"] if unknown else []) + \
                   ([f"missing {', '.join(sorted(lacking))}"] if lacking else [])
        raise UserError(f"{where}: {'; '.join(problems)} (allowed: {', '.join(sorted(allowed))})")
    return table
