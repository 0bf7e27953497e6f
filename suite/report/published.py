"""The published figures the reproduction page compares with: ``<leaderboards>/published.toml`` (:data:`PUBLISHED`).

Each figure has its source (authors, year, venue, table), the leaderboard label (and hparams) of the row of
ours it is compared with, and optionally the *measured* reasons why our interval misses it, each naming the
result files or report pages that measured it and the kind of cause it measured (:data:`CAUSES`). Every
mistake in the file is a one-line :class:`~mtbench.core.errors.UserError` naming the key.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from mtbench.core.errors import UserError
from mtbench.report.evidence import describe

PUBLISHED = "published.toml"  # in the leaderboard folder
BUDGETS = ("quick", "paper")  # the columns; a row of any other budget is not compared
UNEXPLAINED = "gap not yet explained"
#: the kinds of cause a reason measures (``cause`` in the published file, whose header says what each means)
CAUSES = ("budget", "data", "recipe", "protocol", "implementation", "claim")


# -- the published figures -------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    key: str
    authors: str
    title: str
    venue: str
    year: int | None

    @property
    def short(self) -> str:
        return f"{self.authors} {self.year}" if self.year else self.authors


@dataclass(frozen=True)
class Reason:
    """Why our interval misses a published value, as measured: ``evidence`` are repository paths."""

    text: str
    evidence: tuple[str, ...]
    budget: str | None  # the column it explains; None: both
    #: what the measurement found, a key of FINDINGS: the gap's cause ("explains", ``explains = true``), part of
    #: it, not all (``explains = "part"``: still unexplained) or not its cause (``explains = false``: ruled out)
    finding: str = "explains"
    cause: tuple[str, ...] = ()  # of CAUSES
    files: tuple[str, ...] = ()  # the evidence's repository paths, as the published file gives them

    def __post_init__(self) -> None:
        if self.finding not in FINDINGS:
            raise ValueError(f"finding {self.finding!r} is not one of {', '.join(FINDINGS)}")


@dataclass(frozen=True)
class Figure:
    dataset: str
    setting: str
    name: str
    ours: str  # the leaderboard label of our row
    hp: tuple[tuple[str, Any], ...]
    accuracy: float  # %
    approximate: bool
    source: Source
    table: str
    note: str
    reasons: tuple[Reason, ...]

    @property
    def published(self) -> str:
        return f"{'≈ ' * self.approximate}{self.accuracy:g}"

    @property
    def cited(self) -> str:
        return self.source.short + (f", {self.table}" if self.table else "")

    @property
    def matches(self) -> str:
        """Our row as a reader finds it on the leaderboard: its label and the hparams it must have."""
        return self.ours + "".join(f" --hp {k}={_text(v)}" for k, v in self.hp)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _fields(where: str, table: Any, required: Mapping[str, type | tuple[type, ...]],
            optional: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table of keys, got {table!r}")
    unknown = sorted(set(table) - set(required) - set(optional))
    missing = [k for k in required if k not in table]
    if unknown or missing:
        raise UserError(f"{where}: " + "; ".join(
            ([f"unknown key(s) {', '.join(unknown)} (it takes {', '.join([*required, *optional])})"] if unknown else [])
            + ([f"missing {', '.join(missing)}"] if missing else [])))
    for key, kind in {**required, **optional}.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        value = table.get(key)
        if key in table and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
            raise UserError(f"{where}.{key}: {value!r} is not {' or '.join(k.__name__ for k in kinds)}")
    return table


def _reason(where: str, table: Any, repo: Path) -> Reason:
    r = _fields(where, table, {"text": str, "evidence": list},
                {"budget": str, "explains": (bool, str), "cause": (str, list)})
    if isinstance(r.get("explains"), str) and r["explains"] != "part":
        raise UserError(f"{where}.explains: {r['explains']!r} is not true, false or \"part\" (part of the cause, "
                        f"not all of it)")
    if not r["text"].strip():
        raise UserError(f"{where}.text is empty; say what was measured")
    if not r["evidence"] or not all(isinstance(p, str) and p for p in r["evidence"]):
        raise UserError(f"{where}.evidence: give the path(s) of the result files or report pages that measured it")
    for path in r["evidence"]:
        if not (repo / path).exists():
            raise UserError(f"{where}.evidence: {path} does not exist under {repo}; a reason names what measured it")
    if r.get("budget", "quick") not in BUDGETS:
        raise UserError(f"{where}.budget: {r['budget']!r} is not one of {', '.join(BUDGETS)} (or leave it out)")
    cause = [r["cause"]] if isinstance(r.get("cause"), str) else r.get("cause", [])
    if unknown := [c for c in cause if c not in CAUSES]:
        raise UserError(f"{where}.cause: {', '.join(map(repr, unknown))} is not one of {', '.join(CAUSES)}")
    finding = {True: "explains", False: "ruled out", "part": "part"}[r.get("explains", True)]
    return Reason(r["text"], describe(r["evidence"], repo), r.get("budget"), finding, tuple(cause),
                  tuple(r["evidence"]))


#: a reason's finding, in the page's words, in the order the page lists reasons
FINDINGS = {"explains": "explains the gap", "part": "part of the cause", "ruled out": "measured, not the cause"}


def verdict(r: Reason) -> str:
    """What the measurement found, in the page's words (:data:`FINDINGS`)."""
    return FINDINGS[r.finding]


def ordered(reasons: list[Reason] | tuple[Reason, ...]) -> list[Reason]:
    """The reasons that explain a gap, then those measured to be part of its cause, then those ruled out."""
    return sorted(reasons, key=lambda r: list(FINDINGS).index(r.finding))


def parse(doc: dict[str, Any], where: str, repo: Path) -> list[Figure]:
    """The figures of a published-figures document (read from ``where``); evidence paths resolve under ``repo``."""
    _fields(where, doc, {"sources": dict, "figures": list}, {})
    sources = {}
    for key, s in doc["sources"].items():
        s = _fields(f"{where}: sources.{key}", s, {"authors": str, "title": str, "venue": str}, {"year": int})
        sources[key] = Source(key, s["authors"], s["title"], s["venue"], s.get("year"))
    figures = []
    for i, f in enumerate(doc["figures"]):
        at = f"{where}: figures[{i}]"
        f = _fields(at, f, {"dataset": str, "setting": str, "name": str, "ours": str, "accuracy": (int, float),
                            "source": str},
                    {"hp": dict, "approximate": bool, "table": str, "note": str, "reasons": list})
        if f["source"] not in sources:
            raise UserError(f"{at}.source: no source {f['source']!r} in [sources] (it has {', '.join(sources)})")
        if not 0 <= f["accuracy"] <= 100:
            raise UserError(f"{at}.accuracy: {f['accuracy']} is not a percentage (0 to 100)")
        figures.append(Figure(f["dataset"], f["setting"], f["name"], f["ours"], tuple(sorted(f.get("hp", {}).items())),
                              float(f["accuracy"]), f.get("approximate", False), sources[f["source"]],
                              f.get("table", ""), f.get("note", ""),
                              tuple(_reason(f"{at}.reasons[{j}]", r, repo)
                                    for j, r in enumerate(f.get("reasons", [])))))
    return figures


def load(leaderboards: Path) -> list[Figure] | None:
    """The figures of ``<leaderboards>/published.toml``, or ``None`` when there is no such file; evidence paths
    resolve from the folder above the leaderboard folder (the repository root)."""
    path = Path(leaderboards) / PUBLISHED
    if not path.is_file():
        return None
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    return parse(doc, str(path), Path(leaderboards).resolve().parent)
