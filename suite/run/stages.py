"""The stages of one run: resolve → load → fit → score → record.

Each stage is a function from the previous stages' typed outputs to its own, so a sweep, a resume
or ``predict`` can reuse any prefix of them. Every check of the user's input (names, hparams,
budget, device, protocol against the data) happens in :func:`resolve` and :func:`load`, before any
training; nothing is written before :func:`fit` ends (its checkpoint) and the result is written
last, by the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtbench.core.errors import UserError
from mtbench.core.runtime import (autocast, check_precision, device_name, malloc_setting, peak_memory,
                                  reset_peak_memory, select_device, timer)
from mtbench.data import DATASETS, Dataset, Split, resolve_cache_dir, resolve_data_root
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.data.protocols import TransferSpec
from mtbench.data.transforms import to_input
from mtbench.methods import METHODS, FitContext, Method, make_hparams, setting_key
from mtbench.results import SCHEMA_VERSION, provenance
from mtbench.run.checkpoints import (check_backbone, init_record, load_into, read_checkpoint, recalibrate_batchnorm,
                                     save_checkpoint)
from mtbench.run import resume
from mtbench.run.evaluate import evaluate
from mtbench.run.evaluation_state import EvaluationState
from mtbench.run.notes import recipe_notes
from mtbench.run.preflight import (check_cache, check_finite, check_memory, check_structure, readable_data,
                                   writable)
from mtbench.run.spec import SOURCE_EPISODES, RunSpec, check_fit_minutes, check_fit_seed, fit_seed


@dataclass(frozen=True)
class Resolved:
    """The spec with its names resolved and its options checked; no data touched yet.

    Attributes:
        checkpoint: the ``--init`` checkpoint and its sha256, or ``None``.
        fit_state: where ``--checkpoint-every`` saves the fit and the state ``--resume`` continues, or ``None``.
    """

    spec: RunSpec
    method_cls: type[Method]
    dataset_cls: type[Dataset]
    source_cls: type[Dataset]
    hparams: Any
    iterations: int
    device: torch.device
    checkpoint: tuple[dict[str, Any], str] | None
    fit_state: resume.Plan | None = None

    @property
    def cross(self) -> bool:
        """Whether the method is fitted on another dataset than the one it is evaluated on."""
        return self.source_cls is not self.dataset_cls


def setting_of(episodes: EpisodeSpec | TransferSpec) -> str | None:
    """``"20w1s"`` for few-shot episodes (the key of a method's ``paper_settings``), ``None`` for a transfer."""
    return setting_key(episodes.ways, episodes.shots) if isinstance(episodes, EpisodeSpec) else None


def resolve(spec: RunSpec, method_cls: type[Method] | None = None) -> Resolved:
    """Look up the method and datasets, build the hparams, the budget's iterations and the device, read
    the ``--init`` checkpoint: every mistake in the spec is a :class:`UserError` here. ``method_cls``:
    the method's class when it is not looked up by ``spec.method`` (a sandboxed submission's stand-in)."""
    method_cls = method_cls or METHODS.get(spec.method)
    dataset_cls = DATASETS.get(spec.dataset)
    given_source = spec.source or dataset_cls.default_source
    source_cls = DATASETS.get(given_source) if given_source and given_source != spec.dataset else dataset_cls
    check_precision(spec.precision)
    checkpoint = read_checkpoint(spec.init) if spec.init else None
    spec = dataclasses.replace(spec, fit_seed=given_fit_seed(spec, method_cls, checkpoint))
    check_fit_seed(spec.fit_seed)
    if spec.fit_seed and not method_cls.fit_seeded:
        raise UserError(f"--fit-seed {spec.fit_seed}: no fit seed changes {method_cls.name}'s numbers (it fits "
                        f"nothing; each episode seeds its own draws), so every one scores what fit seed 0 does; "
                        f"leave it out")
    if spec.compile and not method_cls.compilable:
        raise UserError(f"--compile: {method_cls.name} is not compilable (it does not call its networks directly; it "
                        f"runs them through torch.func); drop --compile")
    setting = setting_of(spec.episodes)
    hparams = make_hparams(method_cls, spec.dataset, dict(spec.hparams), str(spec.budget), source=source_cls.name,
                           setting=setting)
    if checkpoint:
        check_backbone(checkpoint[0], hparams)  # before the data: the weights fit no other backbone
    recipe_notes(spec, method_cls, source_cls.name, setting, hparams, checkpoint[0] if checkpoint else None)
    iterations = method_cls.iterations_for(spec.budget, source_cls.name, setting)
    device = select_device(spec.device)
    check_memory(spec.episodes)
    if spec.out is not None:
        writable(spec.out, "--out", folder=True, fix="choose another folder with --out")
    if spec.save:
        writable(spec.save, "--save", folder=False, fix="choose another path with --save")
    check_until(spec.until, iterations, spec.budget)
    check_fit_minutes(spec.fit_minutes)
    fit_state = None
    if spec.checkpoint_every is not None or spec.resume or spec.until is not None or spec.fit_minutes is not None:
        fit_state = resume.plan(spec, resume.identity(spec, method_cls, hparams, dataset_cls, source_cls, iterations,
                                                      device, checkpoint[1] if checkpoint else None))
    return Resolved(spec, method_cls, dataset_cls, source_cls, hparams, iterations, device, checkpoint, fit_state)


@dataclass(frozen=True)
class Loaded:
    """The data on the device: the fixed test episodes and what the fit draws from.

    Attributes:
        source: the split the method is fitted on (or the test split when nothing is fitted or calibrated).
        protocol: the episode shape of the evaluation (a transfer trial is one episode).
        fit_spec: the episode shape of the fit (the source's own few-shot tasks for a cross-domain fit).
        unlabelled_split: the target split ``fit`` sees without labels (domain adaptation), or ``None``.
    """

    data: Dataset
    source_data: Dataset
    test: Split
    source: Split
    episodes: EpisodeSet
    protocol: EpisodeSpec
    transfer: TransferSpec | None
    fit_spec: EpisodeSpec
    unlabelled_split: str | None
    unlabelled: Split | None
    #: the target's image shape as decoded, before any transform to the source's input
    decoded_shape: tuple[int, int, int] | None = None


def load(r: Resolved) -> Loaded:
    """Prepare (and where allowed download) the datasets, check their structure against the official
    release, load their splits onto the device, fix the test episodes, and check that the protocol fits
    the data."""
    root = resolve_data_root(r.spec.data_root)
    with readable_data(root, resolve_cache_dir()):
        return _load(r, root)


def _load(r: Resolved, root: Path) -> Loaded:
    spec = r.spec
    data = r.dataset_cls(root=root, progress=spec.progress)
    data.prepare(download=spec.download)
    check_structure(data)
    check_cache(data)
    source_data = r.source_cls(root=root, progress=spec.progress) if r.cross else data
    transfer = spec.episodes if isinstance(spec.episodes, TransferSpec) else None
    # a cross-domain target is brought to the source network's input (its shape and normalisation), so
    # the source is read first; an image folder without a declared size decodes at the source's
    fitted_on = None
    if r.cross:
        source_data.prepare(download=spec.download)
        check_structure(source_data)
        check_cache(source_data)
        fitted_on = source_data.load(source_data.fit_split)
    data.configure("transfer" if transfer else "episodes", fitted_on.image_shape if fitted_on else None,
                   spec.skip_bad_images)
    test = data.load(data.eval_split)
    support = data.load(data.support_split) if data.support_split else None
    decoded_shape = test.image_shape
    if fitted_on is not None and fitted_on.image_shape != test.image_shape:
        args = (fitted_on.image_shape, fitted_on.mean, fitted_on.std, r.source_cls.name)
        test, note = to_input(test, *args)
        support = to_input(support, *args)[0] if support is not None else None
        data.notes.append(note)
    test = test.to(r.device)
    support = support.to(r.device) if support is not None else None
    protocol = transfer.episodes(test.num_classes) if transfer else spec.episodes
    episodes = EpisodeSet(test, protocol, support)
    # a backbone without BatchNorm statistics is calibrated on the training split, never on the test one
    needs_source = r.iterations > 0 or r.checkpoint is not None
    if not needs_source:
        source = test
    elif fitted_on is not None:
        source = fitted_on.to(r.device)
    else:
        source = data.load(data.fit_split).to(r.device)
    # fitting on another domain uses that domain's few-shot tasks, not the target's protocol
    if r.cross or transfer:
        fit_spec = dataclasses.replace(SOURCE_EPISODES, ways=min(SOURCE_EPISODES.ways, source.num_classes),
                                       seed=protocol.seed)
    else:
        fit_spec = protocol
    if r.iterations > 0:  # training draws support + at least one query per class from the fit split
        dataclasses.replace(fit_spec, queries=1).check(source)
    # target-domain images for domain adaptation, labels withheld; never the evaluation split
    unlabelled_split = data.unlabelled_split if r.iterations > 0 and not r.cross else None
    unlabelled = data.load(unlabelled_split).without_labels().to(r.device) if unlabelled_split else None
    return Loaded(data, source_data, test, source, episodes, protocol, transfer, fit_spec, unlabelled_split,
                  unlabelled, decoded_shape)


@dataclass(frozen=True)
class Fitted:
    """The fitted method and what its fit cost.

    Attributes:
        init: the result's ``init`` section (the checkpoint it started from), or ``None``.
        origin: the provenance as the run started (edits made while it runs do not count).
        peak_memory: bytes and how they were measured (``cuda_max_allocated`` / ``cpu_peak_rss``).
    """

    method: Method
    init: dict[str, Any] | None
    ctx: FitContext
    seconds: float
    peak_memory: tuple[int, str]
    origin: dict[str, Any]


def given_fit_seed(spec: RunSpec, method_cls: type[Method], checkpoint: tuple[dict[str, Any], str] | None) -> Any:
    """``--fit-seed``, or where it was not given (``None``) 0, but for a run from a checkpoint (``--init``) of a
    method that a fit seed changes: the checkpoint's fit seed, so that the stages of a pipeline share one."""
    if spec.fit_seed is not None:
        return spec.fit_seed
    saved = checkpoint[0].get("fit_seed") if checkpoint else None
    return saved if isinstance(saved, int) and method_cls.fit_seeded else 0


def fit(r: Resolved, d: Loaded) -> Fitted:
    """Build the method, start it from the checkpoint if any, fit it within the budget (timed) and,
    with ``--save``, write it as a checkpoint."""
    spec = r.spec
    origin = provenance(device_name(r.device), r.device.type, malloc_setting(), spec.command, spec.precision,
                        spec.compile)
    # every draw of the fit comes from --fit-seed, never from the episodes' --seed
    generator = torch.Generator().manual_seed(fit_seed(spec.fit_seed))
    method = r.method_cls(r.hparams, d.test.image_shape, generator, r.device)
    init = None
    if r.checkpoint is not None:
        blob, sha = r.checkpoint
        missing_stats = load_into(method, blob, d.protocol.ways)
        modules = method.modules()
        for attr in dict.fromkeys(k.split(".")[0] for k in missing_stats):
            recalibrate_batchnorm(modules[attr], d.source, generator)
        init = init_record(blob, sha, str(spec.init), recalibrated=bool(missing_stats))
    if spec.compile:  # in place, after loading: the state_dict keys stay those of the plain modules
        method.compile_modules()
    ctx = FitContext(d.source, d.fit_spec, r.iterations, generator, r.device, spec.progress, d.unlabelled,
                     until=spec.until, deadline=time.monotonic() + 60 * spec.fit_minutes if spec.fit_minutes else None)
    # --checkpoint-every / --resume: the context's loops save the state and continue a saved one (run/resume.py)
    state = resume.FitState(r.fit_state, method, ctx, lambda: timer(r.device)) if r.fit_state else None
    reset_peak_memory(r.device)
    start = timer(r.device)
    if r.iterations > 0:
        with autocast(r.device, spec.precision), state.deferred_signals() if state else contextlib.nullcontext():
            method.fit(ctx)
        if state is not None:
            state.finish()
    seconds = state.fit_seconds() if state is not None else timer(r.device) - start
    if partial(r, ctx):
        name = "" if str(r.spec.budget).isdigit() else f"the {r.spec.budget} budget's "
        how = "--until" if ctx.reached == r.spec.until else f"--fit-minutes {r.spec.fit_minutes:g}"
        ctx.note(f"a partial fit: stopped by {how} at iteration {ctx.reached} of {name}{r.iterations} (with the "
                 f"schedules of all {r.iterations}); its state is kept in "
                 f"{r.fit_state.path if r.fit_state else '--out'} "
                 f"for the same command with --resume (and a later --until, or none) to continue it")
    fitted = Fitted(method, init, ctx, seconds, peak_memory(r.device), origin)
    if spec.save:
        save(r, d, fitted, Path(spec.save))
    return fitted


def check_until(until: int | None, iterations: int, budget: str) -> None:
    """``--until``: a whole number of iterations from 1 to the budget's; a :class:`UserError` otherwise."""
    if until is None:
        return
    if not isinstance(until, int) or isinstance(until, bool) or not 0 < until <= iterations:
        raise UserError(f"--until {until}: must be a whole number of iterations from 1 to the {budget} budget's "
                        f"{iterations}; drop --until to run the whole fit")


def partial(r: Resolved, ctx: FitContext) -> bool:
    """Whether ``--until`` or ``--fit-minutes`` stopped the fit before the end of its budget (a partial fit,
    :attr:`FitContext.reached`)."""
    stops = r.spec.until is not None or r.spec.fit_minutes is not None
    return stops and ctx.reached is not None and ctx.reached < r.iterations


def fitted_iterations(r: Resolved, ctx: FitContext) -> int:
    """The iterations the fit ran: where a partial fit stopped, else its budget's."""
    return ctx.reached if partial(r, ctx) else r.iterations


def save(r: Resolved, d: Loaded, f: Fitted, path: Path) -> Path:
    """Write the fitted method and how it was made as a checkpoint (``--save``), atomically."""
    return save_checkpoint(f.method, {
        "method": r.method_cls.name, "method_version": r.method_cls.version,
        "hparams": dataclasses.asdict(f.method.hparams), "in_shape": list(d.test.image_shape),
        "mean": list(d.test.mean), "std": list(d.test.std), "decoded_shape": list(d.decoded_shape or d.test.image_shape),
        "dataset": r.source_cls.name, "fit_split": d.source_data.fit_split, "ways": d.fit_spec.ways,
        # a partial fit (--until) is saved with the iterations it ran, not its budget's: a run from it (--init) must
        # not pass for one from the whole fit
        "shots": d.fit_spec.shots, "budget": str(r.spec.budget),
        "iterations": fitted_iterations(r, f.ctx),
        "fit_seconds": f.seconds, "fit_seed": r.spec.fit_seed, "provenance": f.origin, "init": f.init,
    }, path)


def score(r: Resolved, d: Loaded, f: Fitted) -> dict[str, Any]:
    """Adapt to every fixed test episode and score every predictor: the ``accuracy``, ``adaptation``
    and ``evaluation`` sections of the result."""
    # --checkpoint-every / --resume: the evaluation is saved and continued too (run/evaluation_state.py)
    # the iterations fitted are part of its identity: a partial fit continued is another model
    saver = (EvaluationState(r.fit_state, d.episodes.sha, len(d.episodes), fitted_iterations(r, f.ctx))
             if r.fit_state else None)
    with autocast(r.device, r.spec.precision):
        scores = evaluate(f.method, d.episodes, r.spec.progress, saver=saver)
    for note in saver.notes(len(d.episodes), scores["evaluation"]["seconds"]) if saver else []:
        f.ctx.note(note)
    return check_finite(scores, r.method_cls.name)


def record(r: Resolved, d: Loaded, f: Fitted, scores: dict[str, Any]) -> dict[str, Any]:
    """The result document of the run (see :mod:`mtbench.results.schema`)."""
    spec, ctx, data = r.spec, f.ctx, d.data
    fit_bytes, fit_kind = f.peak_memory
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "method": {"name": r.method_cls.name, "version": r.method_cls.version,
                   "hparams": dataclasses.asdict(f.method.hparams), "transductive": r.method_cls.transductive},
        "dataset": {"name": r.dataset_cls.name, "version": r.dataset_cls.version, "fit_split": data.fit_split,
                    "split": data.eval_split, "unlabelled_split": d.unlabelled_split,
                    "support_split": data.support_split, "notes": data.notes},
        "source": ({"name": r.source_cls.name, "version": r.source_cls.version,
                    "fit_split": d.source_data.fit_split, "notes": d.source_data.notes} if r.cross else None),
        "protocol": {"kind": "transfer" if d.transfer else "episodes", **(d.transfer.record() if d.transfer else {}),
                     **dataclasses.asdict(d.protocol), "episodes_sha": d.episodes.sha,
                     "support_from": data.support_split or data.eval_split, "queries_from": data.eval_split,
                     "fit_episodes": dataclasses.asdict(d.fit_spec) if d.fit_spec is not d.protocol else None},
        "budget": {"name": str(spec.budget), "iterations": r.iterations},
        "init": f.init,
        "accuracy": scores["accuracy"],
        "adaptation": scores["adaptation"],
        "fit": {
            "seed": spec.fit_seed, "seconds": f.seconds, "iterations": fitted_iterations(r, ctx),
            "tasks": ctx.tasks,
            "images": ctx.images,
            "tasks_per_s": ctx.tasks / f.seconds if f.seconds > 0 else 0.0,
            "images_per_s": ctx.images / f.seconds if f.seconds > 0 else 0.0,
            "peak_memory_bytes": fit_bytes, "peak_memory_kind": fit_kind, "notes": ctx.notes,
        },
        "evaluation": scores["evaluation"],
        "provenance": f.origin,
        "submission": spec.submission,
        "reproduced": [],
    }
    doc["method"]["variant"] = r.method_cls.variant(doc)
    return doc

