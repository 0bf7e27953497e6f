"""The official leaderboard: which runs fill it, and the one command that (re)runs what is missing.

The plan is data, ``official.toml`` beside this module (its comments describe the format): settings (a dataset and
its protocol) and the entries that fill each one's table (a method and its hparam overrides), at one budget.
``mtbench official`` runs every missing (setting, entry) row in this process through
:func:`mtbench.run.runner.run`, writing the result straight into ``leaderboards/<dataset>/<setting>/``
(:func:`mtbench.results.layout.folder`), once per fit seed asked for (``--fit-seeds``, default 0 only). A row
counts as present for a fit seed when a valid result there has the entry's label
(:func:`mtbench.board.labels.label`) and recipe hparams (:func:`runs_entry`), the plan's budget and that
``fit.seed``, on any device: a GPU row, where one was lent, stands for the setting; otherwise the quick budget's
CPU row does, and the leaderboard says which device each row ran on. An entry's label is derived, never written in
the plan: the method's name and the variant its class reports (:meth:`~mtbench.methods.Method.variant`) for the
record the run would write. The command is resumable and prints the equivalent ``mtbench run`` commands with
``--dry-run``.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from mtbench.board.plan_lines import checked_table, with_line
from mtbench.core.errors import UserError
from mtbench.data.episodes import EpisodeSpec
from mtbench.data.protocols import TransferSpec
from mtbench.results.layout import folder

PLAN_FILE = "official.toml"  # beside this module, shipped as package data
#: the protocol fields a setting may give, in the order a command line lists them (as ``mtbench run`` spells them)
PROTOCOL_FIELDS = ("ways", "shots", "queries", "episodes", "train_images", "test_images", "trials", "seed")


@dataclass(frozen=True)
class Entry:
    """One row of a setting: a registered method with hparam overrides (``(name, value text)``, as ``--hp``
    takes them), and ``label``, what the leaderboard calls its result (derived, see :func:`expected_label`)."""

    method: str
    hparams: tuple[tuple[str, str], ...]
    label: str
    #: the recipe hparams (``Method.recipe_hparams``) its run resolves to: what a result must have ran to count
    recipe: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def fit_seeded(self) -> bool:
        """Whether a fit seed can change its numbers: its method's :attr:`~mtbench.methods.Method.fit_seeded`."""
        from mtbench.methods import METHODS

        return METHODS.get(self.method).fit_seeded

    def fit_seed_of(self, seed: int) -> int:
        """The fit seed its run takes for ``seed``: its method's :meth:`~mtbench.methods.Method.fit_seed_of` (0 for
        a method no fit seed changes, which fit seed 0 stands for)."""
        from mtbench.methods import METHODS

        return METHODS.get(self.method).fit_seed_of(seed)


@dataclass(frozen=True)
class Setting:
    """A dataset and protocol with the rows that fill its table, at the plan's budget."""

    dataset: str
    name: str  # the folder, as result file names spell it: 5w1s, transfer200-50
    protocol: EpisodeSpec | TransferSpec
    options: tuple[tuple[str, int], ...]  # the protocol fields the plan gives, for the command line
    budget: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Plan:
    budget: str
    settings: tuple[Setting, ...]
    source: str  # the file it was read from

    def select(self, dataset: str | None = None, name: str | None = None) -> list[Setting]:
        """The settings, optionally one dataset's or one setting's; a name outside the plan is an error."""
        chosen = [s for s in self.settings if dataset in (None, s.dataset) and name in (None, s.name)]
        if not chosen:
            known = ", ".join(f"{s.dataset}/{s.name}" for s in self.settings)
            raise UserError(f"no official setting {dataset or '*'}/{name or '*'}; the plan has {known}")
        return chosen


# -- reading the plan ------------------------------------------------------------------------------
def expected_label(method: str, dataset: str, hparams: Mapping[str, str], budget: str) -> str:
    """The label a result of ``mtbench run --method METHOD --dataset DATASET --hp ... --budget BUDGET`` gets:
    the method's ``variant`` of the record such a run writes (its hparams, the images it fits on and its
    iterations, as the runner decides them), through :func:`mtbench.board.labels.label`."""
    from mtbench.board.labels import label

    return label(_planned(method, dataset, hparams, budget, None))


def _planned(method: str, dataset: str, hparams: Mapping[str, str], budget: str, setting: str | None) -> dict[str, Any]:
    """The parts of the result of such a run (in ``setting``, e.g. ``5w1s``) that name its row: its method with
    the hparams it resolves to and the variant they make, data, budget, precision."""
    from mtbench.data import DATASETS
    from mtbench.methods import METHODS, make_hparams

    cls, data = METHODS.get(method), DATASETS.get(dataset)
    source = data.default_source or data.name
    iterations = cls.iterations_for(budget, source)
    resolved = make_hparams(cls, dataset, dict(hparams), budget, source=source, setting=setting)
    record: dict[str, Any] = {
        "method": {"name": cls.name, "variant": "", "hparams": dataclasses.asdict(resolved)},
        "dataset": {"name": data.name,
                    "unlabelled_split": data.unlabelled_split if iterations > 0 and source == data.name else None},
        "budget": {"name": budget, "iterations": iterations},
        "init": None,
        "provenance": {"precision": "fp32", "compile": False},
    }
    record["method"]["variant"] = cls.variant(record)
    return record


def _text(value: Any) -> str:
    """An hparam value as ``--hp`` would spell it (TOML booleans as true/false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _entries(where: str, given: Any, dataset: str, budget: str, setting: str | None) -> tuple[Entry, ...]:
    from mtbench.board.labels import label
    from mtbench.methods import METHODS

    if not isinstance(given, list) or not given:
        raise UserError(f"{where}: expected a non-empty list of entries ({{method = ..., hp = {{...}}}})")
    out = []
    for i, raw in enumerate(given):
        e = checked_table(f"{where}[{i}]", raw, {"method", "hp"}, frozenset({"method"}))
        hp = checked_table(f"{where}[{i}].hp", e.get("hp", {}))
        hparams = tuple((str(k), _text(v)) for k, v in hp.items())
        try:
            record = _planned(e["method"], dataset, dict(hparams), budget, setting)
        except UserError as exc:
            raise UserError(f"{where}[{i}]: {exc}") from None
        cls = METHODS.get(e["method"])
        out.append(Entry(e["method"], hparams, label(record), cls.recipe_hparams(record["method"]["hparams"])))
    return tuple(out)


def parse(doc: dict[str, Any], source: str) -> Plan:
    """The plan of a parsed TOML document; a malformed one is an error naming the place."""
    from mtbench.data import DATASETS
    from mtbench.data.protocols import resolve
    from mtbench.methods import setting_key
    from mtbench.results import setting_name

    checked_table(source, doc, {"budget", "groups", "settings"}, frozenset({"budget", "settings"}))
    budget = _text(doc["budget"])
    groups = checked_table(f"{source}: groups", doc.get("groups", {}))
    if not isinstance(doc["settings"], list):
        raise UserError(f"{source}: settings must be an array of tables ([[settings]])")
    settings = []
    for i, raw in enumerate(doc["settings"]):
        where = f"{source}: settings[{i}]"
        s = checked_table(where, raw, {"dataset", "entries", *PROTOCOL_FIELDS}, frozenset({"dataset", "entries"}))
        options = tuple((k, s[k]) for k in PROTOCOL_FIELDS if k in s)
        try:
            protocol = resolve(DATASETS.get(s["dataset"]).default_protocol, None, **dict(options))
        except (UserError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: {exc}") from None
        entries = s["entries"]
        if isinstance(entries, str):
            if entries not in groups:
                raise UserError(f"{where}: no group {entries!r} in [groups] (it has {', '.join(groups) or 'none'})")
            entries = groups[entries]
        record = protocol.record() if isinstance(protocol, TransferSpec) else dataclasses.asdict(protocol)
        key = None if isinstance(protocol, TransferSpec) else setting_key(protocol.ways, protocol.shots)
        settings.append(Setting(s["dataset"], setting_name(record), protocol, options, budget,
                                _entries(f"{where}.entries", entries, s["dataset"], budget, key)))
    return Plan(budget, tuple(settings), source)


def read(text: str, source: str) -> Plan:
    """The plan in the TOML ``text`` read from ``source``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source} is not valid TOML: {exc}") from None
    try:
        return parse(doc, source)
    except UserError as exc:  # the line it is about, found in the text (tomllib only gives syntax errors one)
        raise UserError(with_line(str(exc), source, text)) from None


@functools.lru_cache(maxsize=1)
def _official() -> Plan:
    return read(resources.files("mtbench.board").joinpath(PLAN_FILE).read_text(encoding="utf-8"), PLAN_FILE)


def load_plan(path: str | Path | None = None) -> Plan:
    """The plan in ``path`` (TOML in the format of ``official.toml``), by default the official one (read once)."""
    if path is None:
        return _official()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the plan {path} ({exc.strerror or exc})") from None
    return read(text, str(path))


# -- present and missing rows ----------------------------------------------------------------------
def _plan_results(where: Path, budget: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The valid results (as the boards screen them: :func:`mtbench.results.integrity.file_problems`) at
    ``budget`` in the folder ``where`` that start from no checkpoint, with their documents, in file-name order."""
    from mtbench.results.integrity import file_problems

    for path in sorted(where.glob("*.json")):
        doc, problems = file_problems(path)  # what the boards leave out does not count
        if doc is not None and not problems and doc["budget"]["name"] == budget and doc["init"] is None:
            yield path, doc


def runs_entry(doc: dict[str, Any], entry: Entry, name: str | None = None) -> bool:
    """Whether the result ``doc`` is a run of the plan's ``entry``: it has the entry's label (or ``name``) and no
    recipe hparam the two both have differs (a ``--hp head=cosine`` fine-tune is not the plan's linear one; an
    hparam added to its method after the result ran is not held against it)."""
    from mtbench.board.labels import hparams_as_ran, label
    from mtbench.methods import METHODS

    if (name or label(doc)) != entry.label:
        return False
    ran = METHODS.get(entry.method).recipe_hparams(
        hparams_as_ran(doc["method"], doc["provenance"]["device_type"])["hparams"])
    return all(ran[k] == v for k, v in entry.recipe.items() if k in ran)


def present(where: Path, setting: Setting, fit_seed: int | None = None) -> dict[str, Path]:
    """The labels of ``setting``'s entries with a result in ``where`` (:func:`_plan_results` at the plan's budget
    that :func:`runs_entry`), each with its newest file; only those of ``fit_seed`` when given."""
    found = {}
    for path, doc in _plan_results(where, setting.budget):
        if fit_seed in (None, doc["fit"]["seed"]):
            found.update({e.label: path for e in setting.entries if runs_entry(doc, e)})
    return found


def first_results(where: Path, setting: Setting) -> dict[str, Path]:
    """:func:`present`'s results, but each label's oldest file by its recorded timestamp, at any version of the
    method (a result of older code, labelled ``maml v1``, counts as ``maml``'s): what the row cost when it was first
    run (the cost of the plan before and after a change, on the report's index)."""
    from mtbench.board.labels import label

    found: dict[str, tuple[str, Path]] = {}
    for path, doc in _plan_results(where, setting.budget):
        unversioned = {k: v for k, v in doc["method"].items() if k != "version"}  # label() then names no version
        stamp, name = doc["provenance"]["timestamp"], label({**doc, "method": unversioned})
        if any(runs_entry(doc, e, name) for e in setting.entries) and (
                name not in found or stamp < found[name][0]):
            found[name] = (stamp, path)
    return {name: path for name, (_, path) in found.items()}


def missing_runs(leaderboards: Path, chosen: list[Setting],
                 fit_seeds: Sequence[int] = (0,)) -> list[tuple[Setting, Entry, int]]:
    """The (setting, entry, fit seed) rows of ``chosen`` with no result yet: each fit seed's in turn, and in it
    each entry across all settings before the next entry, in the plan's order (cheapest fits first), so that an
    interrupted fill covers every table, at the first fit seed first. An entry no fit seed changes
    (:meth:`Entry.fit_seed_of`) is a row at fit seed 0 alone, in the first seed's turn."""
    todo, seeds = [], list(dict.fromkeys(fit_seeds))
    for s, setting in enumerate(chosen):
        where = folder(leaderboards, setting.dataset, setting.name)
        have = {f: present(where, setting, f) for f in dict.fromkeys([*seeds, 0])}
        for e, entry in enumerate(setting.entries):
            mine = dict.fromkeys(entry.fit_seed_of(f) for f in seeds)
            todo += [(seeds.index(f) if f in seeds else 0, e, s, setting, entry, f) for f in mine
                     if entry.label not in have[f]]
    return [(setting, entry, fit_seed) for *_, setting, entry, fit_seed in sorted(todo, key=lambda t: t[:3])]


def missing(leaderboards: Path, chosen: list[Setting]) -> list[tuple[Setting, Entry]]:
    """The (setting, entry) pairs of ``chosen`` with no result at fit seed 0, in :func:`missing_runs`' order."""
    return [(setting, entry) for setting, entry, _ in missing_runs(leaderboards, chosen)]


def cost_lines(leaderboards: Path, chosen: list[Setting]) -> list[str]:
    """What the plan's rows present at fit seed 0 cost, from their result files: per device, the rows and the sum
    of their fit and evaluation seconds (the plan's compute, as the rows were run)."""
    from mtbench.results import read_result

    by_device: dict[str, list[float]] = {}
    for setting in chosen:
        have = present(folder(leaderboards, setting.dataset, setting.name), setting, 0)
        for entry in setting.entries:
            if entry.label in have:
                doc = read_result(have[entry.label])
                row = by_device.setdefault(doc["provenance"]["device"], [0, 0.0, 0.0])
                row[:] = row[0] + 1, row[1] + doc["fit"]["seconds"], row[2] + doc["evaluation"]["seconds"]
    return [f"present, run on {device}: {int(n)} row(s), fit {_time(fit)} + evaluation {_time(ev)} = {_time(fit + ev)}"
            for device, (n, fit, ev) in sorted(by_device.items())]


def _time(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 60 else f"{seconds:.1f} s"


def missing_line(todo: list[Any], chosen: list[Setting], fit_seeds: Sequence[int] = (0,)) -> str:
    """``3 row(s) missing in omniglot/5w1s`` (``at fit seeds 0, 1`` added when asked for other than 0 alone, with
    the entries no fit seed changes, which run at fit seed 0 alone)."""
    seeds = f" at fit seeds {', '.join(map(str, dict.fromkeys(fit_seeds)))}" if list(fit_seeds) != [0] else ""
    once = sorted({e.label for s in chosen for e in s.entries if not e.fit_seeded}) if seeds else []
    once = f" ({', '.join(once)}: fit seed 0 alone, as no fit seed changes its numbers)" if once else ""
    return f"{len(todo)} row(s) missing in {', '.join(f'{s.dataset}/{s.name}' for s in chosen)}{seeds}{once}"


# -- running them ----------------------------------------------------------------------------------
def command(setting: Setting, entry: Entry, leaderboards: Path, extra: tuple[str, ...] = (),
            fit_seed: int = 0) -> list[str]:
    """The ``mtbench run`` command line equivalent to one row (``extra``: the options given after ``--``)."""
    hp = [a for name, value in entry.hparams for a in ("--hp", f"{name}={value}")]
    protocol = [a for name, value in setting.options for a in (f"--{name.replace('_', '-')}", str(value))]
    return ["mtbench", "run", "--method", entry.method, *hp, "--dataset", setting.dataset, *protocol,
            *(["--fit-seed", str(fit_seed)] if fit_seed else []), "--budget", setting.budget,
            "--out", str(folder(leaderboards, setting.dataset, setting.name)), *extra]


def spec(setting: Setting, entry: Entry, leaderboards: Path, overrides: Mapping[str, Any] | None = None,
         extra: tuple[str, ...] = (), fit_seed: int = 0) -> Any:
    """The :class:`~mtbench.run.runner.RunSpec` of one row at ``fit_seed`` (0 for an entry no fit seed changes).
    ``overrides`` sets its other fields (device, data_root, precision...); its ``hparams`` add to the entry's own,
    and win over them."""
    from mtbench.run.runner import RunSpec

    fit_seed = entry.fit_seed_of(fit_seed)
    fields = dict(overrides or {})
    hparams = {**dict(entry.hparams), **dict(fields.pop("hparams", ()))}
    return RunSpec(method=entry.method, dataset=setting.dataset, episodes=setting.protocol, budget=setting.budget,
                   hparams=tuple(hparams.items()), out=str(folder(leaderboards, setting.dataset, setting.name)),
                   command=shlex.join(command(setting, entry, leaderboards, extra, fit_seed)), fit_seed=fit_seed,
                   **fields)


def run_missing(leaderboards: Path, chosen: list[Setting], extra: tuple[str, ...] = (),
                overrides: Mapping[str, Any] | None = None, dry_run: bool = False,
                echo: Callable[[str], Any] = print, fit_seeds: Sequence[int] = (0,),
                cost: Callable[[Setting, Entry, int], tuple[float, Path, str] | None] | None = None) -> int:
    """Run every missing row of ``chosen`` (at each of ``fit_seeds``) in this process, one after the other; a
    failed run is reported in one line and skipped. ``overrides``: other :class:`~mtbench.run.runner.RunSpec`
    fields of every run (see :func:`spec`); ``extra``: the options they came from, shown in the commands.
    ``cost``: with ``dry_run``, a missing row's expected seconds, the file they come from and the device kind it ran
    on when not the run's, or ``None``
    (:func:`mtbench.board.sweep.row_cost`). Returns the number of runs that failed."""
    from mtbench.run import runner

    todo = missing_runs(leaderboards, chosen, fit_seeds)
    if dry_run:
        for line in cost_lines(leaderboards, chosen):
            echo(line)
    echo(missing_line(todo, chosen, fit_seeds))
    failed, expected, unknown, elsewhere = 0, 0.0, 0, 0
    for i, (setting, entry, fit_seed) in enumerate(todo, 1):
        step = f"[{i}/{len(todo)}]"
        at = f" fit seed {fit_seed}" if fit_seed else ""
        if dry_run:
            guess = cost(setting, entry, fit_seed) if cost else None
            expected += guess[0] if guess else 0.0
            unknown += guess is None
            elsewhere += bool(guess and guess[2])
            estimate = (f"expected {_time(guess[0])} (as {guess[1].name}{guess[2]})" if guess
                        else "expected cost unknown")
            echo(f"{step} {entry.label} on {setting.dataset}/{setting.name}{at}: {estimate}")
            echo(f"{' ' * len(step)} {shlex.join(command(setting, entry, leaderboards, extra, fit_seed))}")
            continue
        echo(f"{step} {entry.label} on {setting.dataset}/{setting.name}{at}")
        start = time.monotonic()
        try:
            runner.run(spec(setting, entry, leaderboards, overrides, extra, fit_seed))
        except UserError as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - one row's failure must not stop the others
            reason = f"{type(exc).__name__}: {exc}"
        else:
            echo(f"{step} done in {time.monotonic() - start:.0f} s")
            continue
        failed += 1
        echo(f"{step} FAILED: {reason}")
    if dry_run and todo:
        echo(f"no comparable result: the cost of the {unknown} row(s) is unknown" if unknown == len(todo) else
             f"expected {_time(expected)} one after another" + (f", plus {unknown} row(s) of unknown cost"
                                                               if unknown else "")
             + (f" ({elsewhere} row(s) estimated from a result on another kind of device)" if elsewhere else ""))
    return failed
