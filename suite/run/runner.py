"""One run, end to end: a frozen :class:`RunSpec` in, a validated result record out."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtbench.run.checkpoints import init_record, load_into, read_checkpoint, recalibrate_batchnorm, save_checkpoint
from mtbench.data import DATASETS, resolve_data_root
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.core.errors import UserError
from mtbench.run.evaluate import evaluate
from mtbench.methods import METHODS, FitContext, make_hparams
from mtbench.data.protocols import TransferSpec
from mtbench.results import SCHEMA_VERSION, provenance, write_result
from mtbench.core.runtime import (autocast, check_precision, device_name, malloc_setting, peak_memory, reset_peak_memory,
                      select_device, timer)


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run.

    Args:
        method: registered method name (or ``module:attr``).
        dataset: registered dataset name.
        episodes: the evaluation protocol: few-shot episodes, or the transfer setting (a fixed number
            of labelled target images over seeded trials).
        budget: ``"quick"``, ``"paper"`` or a number of fit iterations.
        hparams: ``(name, value-text)`` overrides of the method's hparams.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        data_root: dataset folder (else ``$MTBENCH_DATA``, else the user cache).
        out: folder for the result file; ``None`` writes nothing.
        download: allow downloading a missing dataset from its official URL.
        progress: show progress bars.
        command: the command line that asked for the run, recorded in the provenance.
        init: a checkpoint (``--save`` of an earlier run) to start from: all of it for the same
            method, the backbone for another (a meta-then-transfer pipeline).
        save: where to write this run's fitted method as a checkpoint.
        source: the dataset to fit on, when not the dataset's own ``default_source`` (a transfer
            target such as ``xray`` defaults to ``miniimagenet``) or, without one, itself.
        precision: ``fp32`` (PyTorch's default, no autocast) or ``bf16`` (fit and evaluation under
            ``torch.autocast`` to bfloat16).
        compile: compile the method's networks in place (``nn.Module.compile``); only for methods
            that are ``compilable``.
        submission: for ``mtbench submit``: the source file, class and the file's sha256, recorded
            as the result's ``submission`` (``None``: a run of a registered method).
    """

    method: str
    dataset: str
    episodes: EpisodeSpec | TransferSpec = EpisodeSpec()
    budget: str = "quick"
    hparams: tuple[tuple[str, str], ...] = ()
    device: str = "auto"
    data_root: str | None = None
    out: str | None = "results"
    download: bool = True
    progress: bool = True
    command: str | None = None
    init: str | None = None
    save: str | None = None
    source: str | None = None
    precision: str = "fp32"
    compile: bool = False
    submission: dict[str, Any] | None = None

#: the few-shot tasks a method is fitted with on a source domain other than the evaluation's
SOURCE_EPISODES = EpisodeSpec(ways=5, shots=5, queries=15, episodes=1)


def fit_seed(seed: int) -> int:
    """The seed of a run's training generator, derived from ``--seed`` but distinct from the episodes'."""
    return int.from_bytes(hashlib.sha256(f"fit|{seed}".encode()).digest()[:8], "little") >> 1


def run(spec: RunSpec) -> tuple[dict[str, Any], Path | None]:
    """Fit the method on the source's fit split, evaluate it on the fixed test episodes, write the result.

    The source is the dataset itself unless it is a transfer target (``default_source``) or
    ``spec.source`` names one. Every check of the user's input (names, hparams, budget, device,
    protocol against the data) happens before any training; the result is written at the very end.
    """
    method_cls = METHODS.get(spec.method)
    dataset_cls = DATASETS.get(spec.dataset)
    source_cls = DATASETS.get(spec.source or dataset_cls.default_source or dataset_cls.name)
    cross = source_cls is not dataset_cls
    check_precision(spec.precision)
    if spec.compile and not method_cls.compilable:
        raise UserError(f"--compile: {method_cls.name} is not compilable (it does not call its networks directly; maml "
                        f"and reptile call theirs through torch.func under vmap/grad); drop --compile")
    hparams = make_hparams(method_cls, spec.dataset, dict(spec.hparams), str(spec.budget), source=source_cls.name)
    iterations = method_cls.iterations_for(spec.budget, source_cls.name)
    device = select_device(spec.device)
    blob, blob_sha = read_checkpoint(spec.init) if spec.init else (None, None)

    root = resolve_data_root(spec.data_root)
    data = dataset_cls(root=root, progress=spec.progress)
    data.prepare(download=spec.download)
    source_data = source_cls(root=root, progress=spec.progress) if cross else data
    if cross:
        source_data.prepare(download=spec.download)
    test = data.load(data.eval_split).to(device)
    support = data.load(data.support_split).to(device) if data.support_split else None
    transfer = spec.episodes if isinstance(spec.episodes, TransferSpec) else None
    protocol = transfer.episodes(test.num_classes) if transfer else spec.episodes
    episodes = EpisodeSet(test, protocol, support)
    # a backbone without BatchNorm statistics is calibrated on the training split, never on the test one
    needs_source = iterations > 0 or blob is not None
    source = source_data.load(source_data.fit_split).to(device) if needs_source else test
    if needs_source and source.image_shape != test.image_shape:
        raise UserError(f"--source {source_cls.name} has {_shape(source.image_shape)} images but {dataset_cls.name} has "
                        f"{_shape(test.image_shape)}: a method fitted on one cannot take the other; choose a source "
                        f"with the same image size and channels")
    # fitting on another domain uses that domain's few-shot tasks, not the target's protocol
    if cross or transfer:
        fit_spec = dataclasses.replace(SOURCE_EPISODES, ways=min(SOURCE_EPISODES.ways, source.num_classes),
                                       seed=protocol.seed)
    else:
        fit_spec = protocol
    if iterations > 0:  # training draws support + at least one query per class from the fit split
        dataclasses.replace(fit_spec, queries=1).check(source)
    # target-domain images for domain adaptation, labels withheld; never the evaluation split
    unlabelled_split = data.unlabelled_split if iterations > 0 and not cross else None
    unlabelled = data.load(unlabelled_split).without_labels().to(device) if unlabelled_split else None

    # the code and device state as the run starts (edits made while it runs do not count)
    origin = provenance(device_name(device), device.type, malloc_setting(), spec.command, spec.precision, spec.compile)
    generator = torch.Generator().manual_seed(fit_seed(spec.episodes.seed))
    method = method_cls(hparams, test.image_shape, generator, device)
    init = None
    if blob is not None:
        missing_stats = load_into(method, blob, protocol.ways)
        if missing_stats:
            recalibrate_batchnorm(method.backbone, source, generator)
        init = init_record(blob, blob_sha, str(spec.init), recalibrated=bool(missing_stats))
    if spec.compile:  # in place, after loading: the state_dict keys stay those of the plain modules
        method.compile_modules()
    ctx = FitContext(source, fit_spec, iterations, generator, device, spec.progress, unlabelled)
    reset_peak_memory(device)
    start = timer(device)
    if iterations > 0:
        with autocast(device, spec.precision):
            method.fit(ctx)
    fit_seconds = timer(device) - start
    fit_mem, fit_mem_kind = peak_memory(device)
    if spec.save:
        save_checkpoint(method, {
            "method": method_cls.name, "method_version": method_cls.version, "hparams": dataclasses.asdict(method.hparams),
            "in_shape": list(test.image_shape), "dataset": source_cls.name, "fit_split": source_data.fit_split,
            "ways": fit_spec.ways, "shots": fit_spec.shots, "budget": str(spec.budget),
            "iterations": iterations, "fit_seconds": fit_seconds, "provenance": origin, "init": init,
        }, Path(spec.save))
    with autocast(device, spec.precision):
        scores = evaluate(method, episodes, spec.progress)

    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "method": {"name": method_cls.name, "version": method_cls.version,
                   "hparams": dataclasses.asdict(method.hparams), "transductive": method_cls.transductive},
        "dataset": {"name": dataset_cls.name, "version": dataset_cls.version, "fit_split": data.fit_split,
                    "split": data.eval_split, "unlabelled_split": unlabelled_split,
                    "support_split": data.support_split, "notes": data.notes},
        "source": ({"name": source_cls.name, "version": source_cls.version, "fit_split": source_data.fit_split,
                    "notes": source_data.notes} if cross else None),
        "protocol": {"kind": "transfer" if transfer else "episodes", **(transfer.record() if transfer else {}),
                     **dataclasses.asdict(protocol), "episodes_sha": episodes.sha,
                     "support_from": data.support_split or data.eval_split, "queries_from": data.eval_split,
                     "fit_episodes": dataclasses.asdict(fit_spec) if fit_spec is not protocol else None},
        "budget": {"name": str(spec.budget), "iterations": iterations},
        "init": init,
        "accuracy": scores["accuracy"],
        "adaptation": scores["adaptation"],
        "fit": {
            "seconds": fit_seconds, "iterations": iterations, "tasks": ctx.tasks, "images": ctx.images,
            "tasks_per_s": ctx.tasks / fit_seconds if fit_seconds > 0 else 0.0,
            "images_per_s": ctx.images / fit_seconds if fit_seconds > 0 else 0.0,
            "peak_memory_bytes": fit_mem, "peak_memory_kind": fit_mem_kind, "notes": ctx.notes,
        },
        "evaluation": scores["evaluation"],
        "provenance": origin,
        "submission": spec.submission,
    }
    doc["method"]["variant"] = method_cls.variant(doc)
    path = write_result(doc, Path(spec.out)) if spec.out is not None else None
    return doc, path


def _shape(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{h}x{w} {'grey' if c == 1 else f'{c}-channel'}"
