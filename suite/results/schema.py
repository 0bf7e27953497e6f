"""The result document: one JSON per run, defined once, here, by the TypedDicts below (``schema_version`` 6).

Every field is required; a field that may be empty is typed ``X | None`` (JSON ``null``). Each field is
annotated ``Annotated[type, "what it means"]``: :func:`validate` derives its checks from those types and
:func:`fields_table` renders the README's table from them. Files of earlier versions are read through
:func:`mtbench.results.upgrade.upgrade`.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, TypedDict, Union

from mtbench.core.runtime import PRECISIONS

SCHEMA_VERSION = 6

NUMBER = (int, float)


# -- the document ------------------------------------------------------------------------------------------------
class Method(TypedDict):
    """The method that ran."""

    name: Annotated[str, "registered name (a submission's own name for `mtbench submit`)"]
    version: Annotated[str, "the method's version; a change to its numbers bumps it"]
    hparams: Annotated[dict[str, Any], "all hyperparameters, after presets and overrides"]
    transductive: Annotated[bool, "predictions use query-set statistics, as MAML's BatchNorm does"]
    variant: Annotated[str, "what sets this configuration apart in a leaderboard, e.g. `1st order`; `\"\"` for none"]


class Dataset(TypedDict):
    """The dataset evaluated on."""

    name: Annotated[str, "registered name"]
    version: Annotated[str, "the dataset's version (its files and splits)"]
    fit_split: Annotated[str, "the split a method fits on when the dataset is its own source"]
    split: Annotated[str, "the split evaluated on"]
    unlabelled_split: Annotated[str | None, "target images `fit` saw without labels, or `null`"]
    support_split: Annotated[str | None, "where support images come from when not `split`, or `null`"]
    notes: Annotated[list[str], "what the data wants said, e.g. a subset copy"]


class Source(TypedDict):
    """The dataset the method was fitted on, when it is not the evaluated one."""

    name: Annotated[str, "registered name"]
    version: Annotated[str, "the dataset's version"]
    fit_split: Annotated[str, "the split fitted on"]
    notes: Annotated[list[str], "what the data wants said"]


class FitEpisodes(TypedDict):
    """The few-shot tasks a fit drew from its source."""

    ways: Annotated[int, "classes per task"]
    shots: Annotated[int, "support images per class"]
    queries: Annotated[int, "query images per class"]
    episodes: Annotated[int, "the protocol's episode count (unused by a fit)"]
    seed: Annotated[int, "seed of the protocol"]


class _Draws(TypedDict):
    ways: Annotated[int, "classes per episode"]
    shots: Annotated[int, "labelled support images per class"]
    queries: Annotated[int, "query images per class"]
    episodes: Annotated[int, "evaluation episodes (transfer: trials)"]
    seed: Annotated[int, "seed of the episodes"]
    episodes_sha: Annotated[str, "sha256 of the drawn episodes: results are ranked together only on the same one"]
    support_from: Annotated[str, "the split support images come from"]
    queries_from: Annotated[str, "the split query images come from"]
    fit_episodes: Annotated[FitEpisodes | None, "the source tasks a cross-domain or transfer fit used, or `null`"]


class EpisodesProtocol(_Draws):
    """Few-shot episodes."""

    kind: Annotated[Literal["episodes"], "`episodes` or `transfer`"]


class TransferProtocol(_Draws):
    """Transfer to a small target: a fixed number of labelled images over seeded trials."""

    kind: Annotated[Literal["transfer"], "`episodes` or `transfer`"]
    train_images: Annotated[int, "transfer only: labelled target images per trial"]
    test_images: Annotated[int, "transfer only: test images per trial"]
    trials: Annotated[int, "transfer only: trials"]


class Budget(TypedDict):
    """How long the method was fitted."""

    name: Annotated[str, "`quick`, `paper` or a number"]
    iterations: Annotated[int, "the budget's fit iterations (the length its schedules are set for)"]


class Init(TypedDict):
    """The checkpoint (``mtbench run --save``) a run started from."""

    path: Annotated[str, "the checkpoint file as given"]
    sha256: Annotated[str, "sha256 of the file"]
    recalibrated_batchnorm: Annotated[bool, "BatchNorm statistics were recomputed on the fit split"]
    method: Annotated[str, "the method that was fitted"]
    method_version: Annotated[str | None, "that method's version (a change to its numbers bumps it); `null` in a "
                                          "result written before version 6, which did not record it"]
    hparams: Annotated[dict[str, Any], "its hyperparameters"]
    dataset: Annotated[str, "the dataset it was fitted on"]
    fit_split: Annotated[str, "the split it was fitted on"]
    budget: Annotated[str, "its budget"]
    iterations: Annotated[int, "its fit iterations"]
    fit_seconds: Annotated[float, "its fit time"]
    fit_seed: Annotated[int | None, "its `--fit-seed`; `null` for a checkpoint saved before checkpoints kept it"]
    init: Annotated[Init | None, "the checkpoint that fit started from (the same fields), or `null`"]
    git_commit: Annotated[str | None, "the commit it was fitted at"]


class Step(TypedDict):
    """Accuracy after one reported adaptation step."""

    step: Annotated[int, "the step; 0 is before adapting"]
    mean: Annotated[float, "mean accuracy over episodes"]
    ci95: Annotated[float, "half-width of the normal 95 % interval"]


class Accuracy(TypedDict):
    """Accuracy after the last adaptation step."""

    mean: Annotated[float, "mean over episodes"]
    ci95: Annotated[float, "half-width of the normal 95 % interval, 1.96·s/√n over episodes"]
    per_episode: Annotated[list[float], "one accuracy per episode, in order"]
    by_step: Annotated[list[Step], "each reported step from step 0 (before adapting) on"]


class Adaptation(TypedDict):
    """Time to adapt to one episode (inside ``adapt``)."""

    steps: Annotated[int, "predictors per episode"]
    ms_per_episode: Annotated[float, "ms to the final predictor; evaluated in chunks, the "
                                     "chunk's time over its episodes"]
    ms_by_step: Annotated[list[float], "cumulative ms, per reported step"]


class Fit(TypedDict):
    """The fit."""

    seed: Annotated[int, "`--fit-seed`: seeds every draw of the fit (initial weights, tasks, BatchNorm "
                         "recalibration); the episodes have their own, `protocol.seed`"]
    seconds: Annotated[float, "wall time"]
    iterations: Annotated[int, "iterations run: the budget's, or fewer for a fit stopped part-way by `--until` (a "
                               "partial fit)"]
    tasks: Annotated[int, "tasks drawn"]
    images: Annotated[int, "images seen"]
    tasks_per_s: Annotated[float, "tasks per second"]
    images_per_s: Annotated[float, "images per second"]
    peak_memory_bytes: Annotated[int, "peak memory"]
    peak_memory_kind: Annotated[str, "`cuda_max_allocated` on a GPU, `cpu_peak_rss` of the process on the CPU"]
    notes: Annotated[list[str], "what the fit wants said, e.g. a fallback it took"]


class Evaluation(TypedDict):
    """The evaluation over all episodes."""

    seconds: Annotated[float, "wall time"]
    tasks_per_s: Annotated[float, "episodes per second"]
    peak_memory_bytes: Annotated[int, "peak memory"]
    peak_memory_kind: Annotated[str, "as for `fit`"]
    batched_episodes: Annotated[int | None, "episodes per chunk when evaluated in chunks (`predict_batch` or `adapt_batch`; time per "
                                            "episode amortised over them); `null` episode by episode"]


class Provenance(TypedDict):
    """Where and how the run ran."""

    mtbench_version: Annotated[str, "the package version"]
    git_commit: Annotated[str | None, "the checkout's commit, or `null` outside a git checkout"]
    git_dirty: Annotated[bool | None, "the checkout had uncommitted changes as the run started"]
    torch: Annotated[str, "PyTorch version"]
    python: Annotated[str, "Python version"]
    device: Annotated[str, "GPU or CPU model (and threads)"]
    device_type: Annotated[str, "`cuda` or `cpu`"]
    threads: Annotated[int, "PyTorch's CPU threads"]
    malloc: Annotated[dict[str, Any], "allocator settings"]
    timestamp: Annotated[str, "start time, ISO 8601 UTC"]
    command: Annotated[str | None, "the command line"]
    precision: Annotated[str, "`fp32` or `bf16` (under autocast)"]
    compile: Annotated[bool, "the method's networks were compiled"]


Submission = TypedDict("Submission", {
    "source": Annotated[str, "the file as given to `mtbench submit`"],
    "class": Annotated[str, "the method's class in it"],
    "source_sha256": Annotated[str, "sha256 of the file"],
})
Submission.__doc__ = "A method given to ``mtbench submit``."


class Reproduction(TypedDict):
    """One re-run of the result's recorded spec by ``mtbench reproduce --record``."""

    by: Annotated[str, "who re-ran it (user@host)"]
    at: Annotated[str, "when, ISO 8601 UTC"]
    device: Annotated[str, "where: GPU or CPU model (and threads)"]
    git_commit: Annotated[str | None, "the commit of the code that re-ran it"]
    verdict: Annotated[Literal["REPRODUCED", "DIFFERS"], "the per-episode accuracies matched (identical, or within the "
                                                         "stated tolerance on other hardware), or did not"]
    identical: Annotated[bool, "every per-episode accuracy equal"]
    mean_difference: Annotated[float, "re-run minus recorded, mean over the paired episodes"]


class Result(TypedDict):
    """One run's result document."""

    schema_version: Annotated[int, "the layout of the document: 6"]
    method: Annotated[Method, "the method"]
    dataset: Annotated[Dataset, "the dataset evaluated on"]
    source: Annotated[Source | None, "the dataset fitted on when it is not `dataset`, or `null`"]
    protocol: Annotated[EpisodesProtocol | TransferProtocol, "what was drawn from it"]
    budget: Annotated[Budget, "the fit budget"]
    init: Annotated[Init | None, "the checkpoint the run started from, or `null`"]
    accuracy: Annotated[Accuracy, "after the last adaptation step"]
    adaptation: Annotated[Adaptation, "time inside `adapt`"]
    fit: Annotated[Fit, "the fit"]
    evaluation: Annotated[Evaluation, "the evaluation"]
    provenance: Annotated[Provenance, "code, machine and command"]
    submission: Annotated[Submission | None, "`null` for a registered method; for `mtbench submit`, the file"]
    reproduced: Annotated[list[Reproduction], "re-runs that checked it (`mtbench reproduce --record`), oldest first"]


# -- checking a document against a type --------------------------------------------------------------------------
def _hints(td: type) -> dict[str, Any]:
    return typing.get_type_hints(td, include_extras=True)


def _is_typeddict(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, dict) and hasattr(kind, "__required_keys__")


def _name(kind: Any) -> str:
    if _is_typeddict(kind):
        return "an object"
    if typing.get_origin(kind) is Literal:
        return " or ".join(map(repr, typing.get_args(kind)))
    return getattr(kind, "__name__", str(kind))


def check(value: Any, kind: Any, where: str) -> list[str]:
    """Problems with ``value`` as a ``kind``: str, int, float (an int is one), bool (never an int or float),
    ``Literal``, ``X | Y``, ``list[X]``, ``dict[str, Any]`` or a TypedDict (every field required, no other);
    each problem starts with the dotted path ``where``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Annotated:
        return check(value, args[0], where)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        found = [check(value, alt, where) for alt in args if alt is not type(None)]
        return [] if any(not f for f in found) else min(found, key=len)
    if origin is Literal:
        ok = any(value == a and type(value) is type(a) for a in args)
        return [] if ok else [f"{where}: expected {_name(kind)}, got {value!r}"]
    if _is_typeddict(kind):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        fields = _hints(kind)
        problems = []
        for key, sub in fields.items():
            path = f"{where}.{key}" if where else key
            problems += check(value[key], sub, path) if key in value else [f"{path}: missing"]
        problems += [f"{where}.{key}: not a field of schema_version {SCHEMA_VERSION}" if where else
                     f"{key}: not a field of schema_version {SCHEMA_VERSION}" for key in value if key not in fields]
        return problems
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in check(item, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        return []
    want = {float: NUMBER}.get(kind, kind)
    if not isinstance(value, want) or (kind is not bool and isinstance(value, bool)):
        return [f"{where}: expected {_name(kind)}, got {type(value).__name__}"]
    return []


def check_fields(doc: Any, schema: dict[str, Any], where: str = "", what: str = "result") -> list[str]:
    """Problems with ``doc`` against a plain ``schema`` (nested dicts of keys to types or tuples of types,
    :data:`NUMBER` for a number; never a bool for an int or number); ``what`` names the document when it is
    not an object at all. For documents other than results (the bench file)."""
    if not isinstance(doc, dict):
        return [f"{where or what}: expected an object"]
    problems = []
    for key, kind in schema.items():
        path = f"{where}.{key}" if where else key
        if key not in doc:
            problems.append(f"{path}: missing")
        elif isinstance(kind, dict):
            problems.extend(check_fields(doc[key], kind, path, what))
        elif not isinstance(doc[key], kind) or (kind in (int, NUMBER) and isinstance(doc[key], bool)):
            problems.append(f"{path}: expected {getattr(kind, '__name__', kind)}, got {type(doc[key]).__name__}")
    return problems


def validate(doc: Any) -> list[str]:
    """Problems with ``doc`` as a result of this :data:`SCHEMA_VERSION` (empty when it conforms): the
    :class:`Result` types at every depth, then what ties fields together."""
    if not isinstance(doc, dict):
        return ["result: expected an object"]
    problems = check(doc, Result, "")
    version = doc.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        problems.insert(0, f"schema_version: {version} is not {SCHEMA_VERSION}")
    if not problems:
        acc = doc["accuracy"]
        if len(acc["per_episode"]) != doc["protocol"]["episodes"]:
            problems.append("accuracy.per_episode: length differs from protocol.episodes")
        if len(acc["by_step"]) != doc["adaptation"]["steps"]:
            problems.append("accuracy.by_step: length differs from adaptation.steps")
        if doc["fit"]["iterations"] > doc["budget"]["iterations"]:
            problems.append(f"fit.iterations: {doc['fit']['iterations']} is past budget.iterations "
                            f"{doc['budget']['iterations']} (a fit runs its budget, or less when --until stops it)")
        precision = doc["provenance"]["precision"]
        if precision not in PRECISIONS:
            problems.append(f"provenance.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    return problems


# -- the README's table ------------------------------------------------------------------------------------------
def _type_text(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Annotated:
        return _type_text(args[0])
    if origin in (Union, types.UnionType):
        return " \\| ".join(dict.fromkeys(_type_text(a) for a in args))
    if origin is Literal:
        return " \\| ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin is list:
        return f"list[{_type_text(args[0])}]"
    if origin is dict:
        return "object"
    if kind is type(None):
        return "null"
    return "object" if _is_typeddict(kind) else kind.__name__


def _rows(td: type, prefix: str, seen: tuple[type, ...]) -> list[tuple[str, str, str]]:
    """(path, type, meaning) of each field of ``td`` and, below it, of the TypedDicts it holds (once each:
    the alternatives of a union share their rows, a field's types joined; a recursive one is not opened)."""
    rows: dict[str, tuple[str, str, str]] = {}
    for key, annotated in _hints(td).items():
        kind, meaning = typing.get_args(annotated)[:2]
        path = f"{prefix}{key}"
        rows[path] = (path, _type_text(kind), meaning)
        if typing.get_origin(kind) is list:
            kind, path = typing.get_args(kind)[0], f"{path}[]"
        for alt in typing.get_args(kind) if typing.get_origin(kind) in (Union, types.UnionType) else (kind,):
            if not _is_typeddict(alt) or alt in seen:
                continue
            for sub, text, said in _rows(alt, f"{path}.", (*seen, alt)):
                if sub in rows and rows[sub][1] != text:
                    text = f"{rows[sub][1]} \\| {text}"
                rows[sub] = (sub, text, rows[sub][2] if sub in rows else said)
    return list(rows.values())


def fields_table() -> str:
    """The Markdown table of every field of a result, from the :class:`Result` annotations (README's table)."""
    lines = ["| field | type | meaning |", "|---|---|---|"]
    lines += [f"| `{path}` | {kind} | {meaning} |" for path, kind, meaning in _rows(Result, "", (Result,))]
    return "\n".join(lines)


def partial_fit(doc: dict[str, Any]) -> bool:
    """Whether a result's fit stopped before its budget's end (``mtbench run --until``): ``fit.iterations`` below
    ``budget.iterations``. Its row is its own, never averaged with whole fits."""
    return doc["fit"]["iterations"] < doc["budget"]["iterations"]
