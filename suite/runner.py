"""One run, end to end: a frozen :class:`RunSpec` in, a validated result record out."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import init_record, load_into, read_checkpoint, recalibrate_batchnorm, save_checkpoint
from .data import DATASETS, resolve_data_root
from .episodes import EpisodeSet, EpisodeSpec
from .evaluate import evaluate
from .methods import METHODS, FitContext, make_hparams
from .results import SCHEMA_VERSION, provenance, write_result
from .runtime import device_name, malloc_setting, peak_memory, reset_peak_memory, select_device, timer


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run.

    Args:
        method: registered method name (or ``module:attr``).
        dataset: registered dataset name.
        episodes: the evaluation protocol.
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
    """

    method: str
    dataset: str
    episodes: EpisodeSpec = EpisodeSpec()
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


def fit_seed(seed: int) -> int:
    """The seed of a run's training generator, derived from ``--seed`` but distinct from the episodes'."""
    return int.from_bytes(hashlib.sha256(f"fit|{seed}".encode()).digest()[:8], "little") >> 1


def run(spec: RunSpec) -> tuple[dict[str, Any], Path | None]:
    """Fit the method on the dataset's fit split, evaluate it on the fixed test episodes, write the result.

    Every check of the user's input (names, hparams, budget, device, protocol against the data)
    happens before any training, and the result file is only written at the very end.
    """
    method_cls = METHODS.get(spec.method)
    dataset_cls = DATASETS.get(spec.dataset)
    hparams = make_hparams(method_cls, spec.dataset, dict(spec.hparams), str(spec.budget))
    iterations = method_cls.iterations_for(spec.budget, spec.dataset)
    device = select_device(spec.device)
    blob, blob_sha = read_checkpoint(spec.init) if spec.init else (None, None)

    data = dataset_cls(root=resolve_data_root(spec.data_root), progress=spec.progress)
    data.prepare(download=spec.download)
    test = data.load(data.eval_split).to(device)
    episodes = EpisodeSet(test, spec.episodes)
    # a backbone without BatchNorm statistics is calibrated on the training split, never on the test one
    needs_source = iterations > 0 or blob is not None
    source = data.load(data.fit_split).to(device) if needs_source else test
    if iterations > 0:  # training draws support + at least one query per class from the fit split
        dataclasses.replace(spec.episodes, queries=1).check(source)
    # target-domain images for domain adaptation, labels withheld; never the evaluation split
    unlabelled_split = data.unlabelled_split if iterations > 0 else None
    unlabelled = data.load(unlabelled_split).without_labels().to(device) if unlabelled_split else None

    # the code and device state as the run starts (edits made while it runs do not count)
    origin = provenance(device_name(device), device.type, malloc_setting(), spec.command)
    generator = torch.Generator().manual_seed(fit_seed(spec.episodes.seed))
    method = method_cls(hparams, test.image_shape, generator, device)
    init = None
    if blob is not None:
        missing_stats = load_into(method, blob, spec.episodes.ways)
        if missing_stats:
            recalibrate_batchnorm(method.backbone, source, generator)
        init = init_record(blob, blob_sha, str(spec.init), recalibrated=bool(missing_stats))
    ctx = FitContext(source, spec.episodes, iterations, generator, device, spec.progress, unlabelled)
    reset_peak_memory(device)
    start = timer(device)
    if iterations > 0:
        method.fit(ctx)
    fit_seconds = timer(device) - start
    fit_mem, fit_mem_kind = peak_memory(device)
    if spec.save:
        save_checkpoint(method, {
            "method": method_cls.name, "method_version": method_cls.version, "hparams": dataclasses.asdict(hparams),
            "in_shape": list(test.image_shape), "dataset": dataset_cls.name, "fit_split": data.fit_split,
            "ways": spec.episodes.ways, "shots": spec.episodes.shots, "budget": str(spec.budget),
            "iterations": iterations, "fit_seconds": fit_seconds, "provenance": origin, "init": init,
        }, Path(spec.save))
    scores = evaluate(method, episodes, spec.progress)

    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "method": {"name": method_cls.name, "version": method_cls.version,
                   "hparams": dataclasses.asdict(hparams), "transductive": method_cls.transductive},
        "dataset": {"name": dataset_cls.name, "version": dataset_cls.version, "fit_split": data.fit_split,
                    "split": data.eval_split, "unlabelled_split": unlabelled_split},
        "protocol": {**dataclasses.asdict(spec.episodes), "episodes_sha": episodes.sha},
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
    }
    path = write_result(doc, Path(spec.out)) if spec.out is not None else None
    return doc, path
