"""Sweeps: a grid of runs, from command-line values or a sweep file, as trials that know their results.

A trial is a :class:`~mtbench.run.spec.RunSpec` whose ``out`` is its leaderboard folder
(``<out>/<dataset>/<setting>/``, :func:`mtbench.results.layout.folder`) and its *identity*: the method, its
resolved hparams (defaults, presets and overrides), the dataset and source, the protocol's parameters (its
kind, shape, size and seed: they fix the episodes and so their sha), the fit seed, the budget, precision and
compilation.
A valid result in the folder with the same identity, from no ``--init`` checkpoint, is the trial's result on
any device: the trial is then skipped. The grid comes from comma-separated option values
(:func:`grid`) or from a sweep file in the format of the official plan (:func:`from_file`, read by
:func:`mtbench.board.official.load_plan`); either way every value is checked before any trial runs and all
the problems are reported together. :mod:`mtbench.board.engines` runs the trials.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtbench.core.errors import UserError
from mtbench.data.episodes import EpisodeSpec
from mtbench.data.protocols import TransferSpec
from mtbench.results.layout import folder
from mtbench.run.spec import RunSpec


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: ``spec.out`` is its folder; ``key`` its identity (canonical JSON)."""

    spec: RunSpec
    key: str

    @property
    def folder(self) -> Path:
        return Path(str(self.spec.out))

    @property
    def digest(self) -> str:
        """A short name for the trial's claim and failure files."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:20]

    @property
    def summary(self) -> str:
        """``protonet synthetic/3w1s seed 0 fit 2 budget 2 hp lr=0.1``: what sets it apart, for progress lines
        (``fit N`` only for a fit seed other than 0)."""
        s, e = self.spec, self.spec.episodes
        hp = f" hp {','.join(f'{k}={v}' for k, v in s.hparams)}" if s.hparams else ""
        fit = f" fit {s.fit_seed}" if s.fit_seed else ""
        return f"{s.method} {s.dataset}/{self.folder.name} seed {e.seed}{fit} budget {s.budget}{hp}"


# -- identities --------------------------------------------------------------------------------------------
def _protocol(p: Mapping[str, Any]) -> dict[str, Any]:
    fields = ("train_images", "test_images", "trials") if p.get("kind") == "transfer" else \
        ("ways", "shots", "queries", "episodes")
    return {"kind": p.get("kind", "episodes"), **{k: p[k] for k in fields}, "seed": p["seed"]}


def _canonical(identity: dict[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


def doc_identity(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The identity of a result, or ``None`` for one that started from a checkpoint (never a sweep's)."""
    if doc["init"] is not None:
        return None
    prov = doc["provenance"]
    return {"method": doc["method"]["name"], "hparams": json.loads(json.dumps(doc["method"]["hparams"])),
            "versions": [str(doc["method"]["version"]), str(doc["dataset"]["version"])],
            "dataset": doc["dataset"]["name"], "source": doc["source"]["name"] if doc["source"] else None,
            "protocol": _protocol(doc["protocol"]), "fit_seed": doc["fit"]["seed"], "budget": doc["budget"]["name"],
            "precision": prov.get("precision", "fp32"), "compile": bool(prov.get("compile", False))}


def trial(spec: RunSpec) -> Trial:
    """The trial of ``spec`` (its ``out`` the result folder); a bad method, dataset, budget or hparam is a
    :class:`UserError`."""
    from mtbench.run.stages import resolve

    r = resolve(dataclasses.replace(spec, init=None, save=None, checkpoint_every=None, resume=False))
    e = spec.episodes
    protocol = {"kind": "transfer", **e.record(), "seed": e.seed} if isinstance(e, TransferSpec) else \
        {"kind": "episodes", **dataclasses.asdict(e)}
    identity = {"method": r.method_cls.name, "hparams": json.loads(json.dumps(dataclasses.asdict(r.hparams))),
                # a result of another method or dataset version is not this trial's: it reruns after a bump
                "versions": [str(r.method_cls.version), str(r.dataset_cls.version)],
                "dataset": r.dataset_cls.name, "source": r.source_cls.name if r.cross else None,
                "protocol": _protocol(protocol), "fit_seed": spec.fit_seed, "budget": str(spec.budget),
                "precision": spec.precision, "compile": bool(spec.compile)}
    return Trial(spec, _canonical(identity))


def matches(key: str, found: str, any_seed: bool = False) -> bool:
    """Whether a result of identity ``found`` is the trial ``key``'s (``any_seed``: but for the seeds, episodes'
    and fit's, and the code versions, which makes it a comparable one: what it cost predicts the trial's). An
    hparam the trial leaves at ``"auto"`` matches the value the run chose for it
    (MAML's ``task_batching``: how it computes, by device, not what)."""
    want, got = json.loads(key), json.loads(found)
    if any_seed:
        want["protocol"].pop("seed"), got["protocol"].pop("seed"), want.pop("fit_seed"), got.pop("fit_seed")
        want.pop("versions", None), got.pop("versions", None)
    hp_want, hp_got = want.pop("hparams"), got.pop("hparams")
    if any_seed:  # an hparam one of them lacks (renamed, added by a later version) does not make it incomparable
        hp_want = {k: v for k, v in hp_want.items() if k in hp_got}
        hp_got = {k: v for k, v in hp_got.items() if k in hp_want}
    return want == got and hp_want.keys() == hp_got.keys() and all(
        v == "auto" or hp_got[k] == v for k, v in hp_want.items())


# -- the results already in a folder ------------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    path: Path
    key: str
    seconds: float  # fit + evaluation
    timestamp: str
    device_type: str  # cpu or cuda


_SEEN: dict[Path, tuple[tuple[int, int], Found | None]] = {}  # file -> (mtime_ns, size), what it holds


def results(where: Path) -> list[Found]:
    """The valid results in ``where`` that a sweep's trial could have written (each file read once while
    unchanged)."""
    from mtbench.results import read_result

    found = []
    for path in sorted(where.glob("*.json")):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        stamp = (st.st_mtime_ns, st.st_size)
        if path not in _SEEN or _SEEN[path][0] != stamp:
            try:
                doc = read_result(path)
                identity = doc_identity(doc)
                item = None if identity is None else Found(
                    path, _canonical(identity), doc["fit"]["seconds"] + doc["evaluation"]["seconds"],
                    doc["provenance"]["timestamp"], doc["provenance"]["device_type"])
            except (UserError, KeyError, TypeError):
                item = None
            _SEEN[path] = (stamp, item)
        if _SEEN[path][1] is not None:
            found.append(_SEEN[path][1])
    return found


def existing(t: Trial) -> Path | None:
    """The result of ``t`` already in its folder, if any."""
    return next((f.path for f in results(t.folder) if matches(t.key, f.key)), None)


def expected_seconds(t: Trial) -> tuple[float, Path, str] | None:
    """Fit + evaluation seconds of the newest comparable result in the trial's folder (same identity but the
    seeds), its file, and ``""``; of those run on the kind of device the trial runs on (``--device``; ``auto``:
    CUDA where present) when there is one, else of another, which the third item names (`` on CUDA``: a GPU's
    minutes do not predict a CPU's hours); ``None`` when there is none."""
    import torch

    from mtbench.core.runtime import select_device

    device = str(t.spec.device)  # a GPU's run is planned on a machine without one too: only "auto" is resolved here
    kind = (select_device(device) if device == "auto" else torch.device(device)).type
    same = [f for f in results(t.folder) if matches(t.key, f.key, any_seed=True)]
    newest = max(same, key=lambda f: (f.device_type == kind, f.timestamp), default=None)
    if newest is None:
        return None
    return newest.seconds, newest.path, "" if newest.device_type == kind else f" on {newest.device_type.upper()}"


def row_cost(setting: Any, entry: Any, leaderboards: Path, overrides: Mapping[str, Any] | None,
             fit_seed: int) -> tuple[float, Path, str] | None:
    """:func:`expected_seconds` of a row of a plan (:mod:`mtbench.board.official`): a result in its folder that is
    the row's but for its seeds or code versions (another fit seed; the row as an earlier version ran it), on
    whatever device that ran; ``None`` without one."""
    from mtbench.board.official import spec

    try:
        return expected_seconds(trial(spec(setting, entry, leaderboards, overrides, fit_seed=fit_seed)))
    except UserError:
        return None


# -- the equivalent command line ----------------------------------------------------------------------------
def command(spec: RunSpec, extra: Sequence[str] = ()) -> str:
    """The ``mtbench run`` command that runs ``spec``; ``extra``: the options every trial was given."""
    e = spec.episodes
    protocol = {"train_images": e.train_images, "test_images": e.test_images, "trials": e.trials} \
        if isinstance(e, TransferSpec) else {"ways": e.ways, "shots": e.shots, "queries": e.queries,
                                              "episodes": e.episodes}
    args = ["mtbench", "run", "--method", spec.method, *[a for k, v in spec.hparams for a in ("--hp", f"{k}={v}")],
            "--dataset", spec.dataset, *[a for k, v in protocol.items() for a in (f"--{k.replace('_', '-')}", str(v))],
            "--seed", str(e.seed), *(["--fit-seed", str(spec.fit_seed)] if spec.fit_seed else []),
            "--budget", str(spec.budget), "--out", str(spec.out), *extra]
    return shlex.join(args)


# -- grids from option values -------------------------------------------------------------------------------
GRID_INTS = ("ways", "shots", "queries", "episodes", "train_images", "test_images", "trials", "seed")


def split_values(option: str, text: str) -> tuple[list[str], list[str]]:
    """``"a,b"`` -> ``(["a", "b"], problems)``: an empty value is a problem."""
    values = [v.strip() for v in str(text).split(",")]
    bad = [f"--{option.replace('_', '-')} {text!r}: an empty value; separate values with single commas, e.g. "
           f"--{option.replace('_', '-')} a,b"] if any(not v for v in values) else []
    return [v for v in values if v], bad


def whole_numbers(option: str, text: str) -> tuple[list[int], list[str]]:
    """``"0,1"`` -> ``([0, 1], problems)``: an empty value, or one that is not a whole number ≥ 0, is a problem."""
    given, problems = split_values(option, text)
    ok = []
    for v in given:
        if re.fullmatch(r"\d+", v):
            ok.append(int(v))
        else:
            flag = f"--{option.replace('_', '-')}"
            problems.append(f"{flag} {v}: not a whole number ≥ 0; give whole numbers, e.g. {flag} "
                            f"{'5,20' if option == 'ways' else '1,5'}")
    return ok, problems


def grid(methods: str, datasets: str, *, out: str | Path, budgets: str = "quick", seeds: str = "0",
         fit_seeds: str = "0", hparams: Sequence[str] = (), protocol: str | None = None,
         overrides: Mapping[str, Any] | None = None, extra: Sequence[str] = (), **ints: str | None) -> list[Trial]:
    """The trials of every combination of the comma-separated values: methods x datasets x protocol values
    (``ways``, ``shots``, ``queries``, ``episodes``, ``train_images``, ``test_images``, ``trials``: text or
    ``None`` for the dataset's default) x seeds x fit seeds x budgets x ``--hp NAME=V1,V2`` values. An hparam
    applies to the methods that have it (one no method of the grid has is an error). ``overrides``: other RunSpec
    fields of every trial (device, data_root...); ``extra``: the options they came from. Every problem in the grid is
    found before any trial runs, and all of them are raised together as one :class:`UserError`."""
    from mtbench.data import DATASETS
    from mtbench.data.protocols import resolve
    from mtbench.methods import METHODS

    problems: list[str] = []

    def values(option: str, text: str | None) -> list[str]:
        got, bad = split_values(option, text) if text is not None else ([], [])
        problems.extend(bad)
        return got

    def lookup(option: str, registry: Any, names: list[str]) -> list[Any]:
        found = []
        for name in names:
            try:
                found.append(registry.get(name))
            except UserError as exc:
                problems.append(f"--{option} {name}: {exc}")
        return found

    def whole(name: str, text: str) -> list[int]:
        got, bad = whole_numbers(name, text)
        problems.extend(bad)
        return got

    method_classes = lookup("method", METHODS, values("method", methods))
    dataset_classes = lookup("dataset", DATASETS, values("dataset", datasets))
    numbers: dict[str, list[int | None]] = {}
    for name in GRID_INTS:
        text = seeds if name == "seed" else ints.pop(name, None)
        numbers[name] = [*whole(name, text)] if text is not None else [None]
    fit_seed_values = whole("fit_seed", fit_seeds)
    if ints:
        raise TypeError(f"grid() got unknown options {', '.join(ints)}")
    budget_values = values("budget", budgets)
    hp_axes: list[tuple[str, list[str]]] = []
    for item in hparams:
        name, sep, text = str(item).partition("=")
        if not sep or not name.strip():
            problems.append(f"--hp {item!r}: not NAME=VALUE[,VALUE...]; write e.g. --hp inner_lr=0.4,0.1")
            continue
        name = name.strip()
        owners = [c for c in method_classes if name in {f.name for f in dataclasses.fields(c.Hparams)}]
        if method_classes and not owners:
            problems.append(f"--hp {name}: no method of the grid ({', '.join(c.name for c in method_classes)}) "
                            f"has an hparam '{name}'; drop it or add a method that has it")
        hp_axes.append((name, values("hp", text)))

    from mtbench.methods import make_hparams
    from mtbench.results import setting_name

    settings = []  # (dataset class, protocol, folder), each checked
    for data_cls in dataset_classes:
        for combo in itertools.product(*numbers.values()):
            given = dict(zip(numbers, combo))
            try:
                spec_protocol = resolve(data_cls.default_protocol, protocol, **{
                    k: v for k, v in given.items() if k != "seed"}, seed=given["seed"] or 0)
            except (UserError, TypeError, ValueError) as exc:
                problems.append(f"--dataset {data_cls.name}: {exc}")
                continue
            record = spec_protocol.record() if isinstance(spec_protocol, TransferSpec) else \
                dataclasses.asdict(spec_protocol)
            settings.append((data_cls, spec_protocol, folder(out, data_cls.name, setting_name(record))))
    for cls, data_cls in itertools.product(method_classes, dataset_classes):  # each value alone, once
        source = data_cls.default_source or data_cls.name
        for budget in budget_values:
            try:
                cls.iterations_for(budget, source)
            except UserError as exc:
                problems.append(f"--budget {budget}: {exc}")
        for name, hp_values in hp_axes:
            for value in hp_values if any(f.name == name for f in dataclasses.fields(cls.Hparams)) else ():
                try:
                    make_hparams(cls, data_cls.name, {name: value}, source=source)
                except UserError as exc:
                    problems.append(f"--hp {name}={value}: {exc}".replace(f": --hp {name}={value}: ", ": "))
    if problems:  # the combinations would only repeat them
        check(problems)

    fields = dict(overrides or {})
    base_hp = dict(fields.pop("hparams", ()))
    trials: list[Trial] = []
    for data_cls, spec_protocol, where in settings:
        for cls, fit_seed, budget in itertools.product(method_classes, fit_seed_values, budget_values):
            mine = [(n, vs) for n, vs in hp_axes if n in {f.name for f in dataclasses.fields(cls.Hparams)}]
            for hp_values in itertools.product(*[vs for _, vs in mine]):
                hp = {**base_hp, **dict(zip([n for n, _ in mine], hp_values))}
                spec = RunSpec(method=cls.name, dataset=data_cls.name, episodes=spec_protocol, budget=budget,
                               hparams=tuple(hp.items()), out=str(where), fit_seed=cls.fit_seed_of(fit_seed), **fields)
                spec = dataclasses.replace(spec, command=command(spec, extra))
                try:
                    trials.append(trial(spec))
                except UserError as exc:  # what only a combination gets wrong (or the options given to all)
                    problems.append(f"{cls.name} on {data_cls.name} budget {budget}"
                                    f"{' hp ' + ','.join(f'{k}={v}' for k, v in hp.items()) if hp else ''}: {exc}")
    if not problems and not trials:
        problems.append("the grid is empty; give at least one --method and one --dataset")
    check(problems)
    return dedupe(trials)


def check(problems: list[str]) -> None:
    """Raise every problem at once, one line each, or nothing when there is none."""
    unique = list(dict.fromkeys(problems))
    if unique:
        raise UserError(f"{len(unique)} problem(s) in the sweep, nothing ran:\n  " + "\n  ".join(unique))


def dedupe(trials: list[Trial]) -> list[Trial]:
    """The trials in order, each (folder, identity) once."""
    seen: dict[tuple[Path, str], Trial] = {}
    for t in trials:
        seen.setdefault((t.folder.resolve(), t.key), t)
    return list(seen.values())


# -- sweep files (the official plan's format) ---------------------------------------------------------------
def plan_trials(rows: Sequence[tuple[Any, Any, int]], out: str | Path, overrides: Mapping[str, Any] | None = None,
                extra: Sequence[str] = ()) -> list[Trial]:
    """The trials of (setting, entry, fit seed) rows of a plan (:mod:`mtbench.board.official`), written under
    ``out``."""
    from mtbench.board.official import spec

    problems, trials = [], []
    for setting, entry, fit_seed in rows:
        s = spec(setting, entry, Path(out), overrides, tuple(extra), fit_seed)
        try:
            trials.append(trial(dataclasses.replace(s, command=command(s, extra))))
        except UserError as exc:
            problems.append(f"{entry.label} on {setting.dataset}/{setting.name}: {exc}")
    check(problems)
    return dedupe(trials)


def from_file(path: str | Path, out: str | Path, overrides: Mapping[str, Any] | None = None,
              extra: Sequence[str] = (), fit_seeds: Sequence[int] = (0,)) -> list[Trial]:
    """The trials of a sweep file (the format of ``official.toml``: every entry of every setting), once per fit
    seed."""
    from mtbench.board.official import load_plan

    plan = load_plan(path)
    if not plan.settings:
        raise UserError(f"{path}{_line_of(path, 'settings')}: the sweep is empty; add [[settings]] tables with "
                        f"entries")
    return plan_trials([(s, e, f) for s in plan.settings for e in s.entries for f in fit_seeds], out, overrides,
                       extra)


def _line_of(path: str | Path, key: str) -> str:
    from mtbench.board.plan_lines import key_line

    try:
        line = key_line(Path(path).read_text(encoding="utf-8"), [key])
    except OSError:
        return ""
    return f" line {line}" if line else ""
