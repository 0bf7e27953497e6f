"""What a run is: the frozen :class:`RunSpec` a command line, a sweep or a test builds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mtbench.core.errors import UserError
from mtbench.core.seeding import seed_hash
from mtbench.data.episodes import EpisodeSpec
from mtbench.data.protocols import TransferSpec


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
            method, its ``transferable`` modules for another (a meta-then-transfer pipeline).
        save: where to write this run's fitted method as a checkpoint.
        source: the dataset to fit on, when not the dataset's own ``default_source`` (a transfer
            target such as ``xray`` defaults to ``miniimagenet``) or, without one, itself.
        precision: ``fp32`` (PyTorch's default, no autocast) or ``bf16`` (fit and evaluation under
            ``torch.autocast`` to bfloat16).
        compile: compile the method's networks in place (``nn.Module.compile``); only for methods
            that are ``compilable``.
        skip_bad_images: leave out images Pillow cannot read (an image folder's), counted in the dataset
            notes, instead of stopping with an error naming the first.
        submission: for ``mtbench submit``: the source file, class and the file's sha256, recorded
            as the result's ``submission`` (``None``: a run of a registered method).
        fit_seed: ``--fit-seed``: seeds every draw of the fit (the method's initial weights, its tasks,
            BatchNorm recalibration), apart from ``episodes.seed``, which fixes the test episodes only; ``None``
            (not given): 0, or from a checkpoint (``init``) the fit seed it was saved with (see
            :func:`mtbench.run.stages.given_fit_seed`).
        checkpoint_every: ``--checkpoint-every``: save the fit's state under ``out`` every this many minutes
            (and on Ctrl-C / SIGTERM during the fit), ``None`` for never; see :mod:`mtbench.run.resume`.
        resume: ``--resume``: continue the fit from the state saved by the same run.
        state_dir: where ``checkpoint_every`` keeps the run's states instead of ``out`` (``<state_dir>/.resume/``),
            and continues them from whenever they are there: a trial of ``mtbench official`` (its folder in the
            sweep's storage, as its result is written by the sweep, not the run).
        until: ``--until``: stop the fit after this many iterations of its budget (schedules unchanged), evaluate
            it as a partial fit (``fit.iterations`` < ``budget.iterations``: a row of its own, never averaged with
            whole fits) and keep its state under ``out`` for ``--resume``; ``None`` runs the whole budget.
        fit_minutes: ``--fit-minutes``: stop the fit at the first iteration boundary of its budget after this many
            minutes of this run's fitting (at least one iteration), as ``until`` would stop it there: a partial fit
            whose result records the iterations it reached (``--until`` that number reproduces it); ``None``: no
            time limit.
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
    skip_bad_images: bool = False
    fit_seed: int | None = None
    checkpoint_every: float | None = None
    resume: bool = False
    until: int | None = None
    fit_minutes: float | None = None
    state_dir: str | None = None


#: the few-shot tasks a method is fitted with on a source domain other than the evaluation's
SOURCE_EPISODES = EpisodeSpec(ways=5, shots=5, queries=15, episodes=1)


def fit_seed(seed: int) -> int:
    """The seed of a run's training generator for ``--fit-seed`` ``seed``: hashed, so that it is never the
    seed of an episode. Results before ``--fit-seed`` existed were fitted from ``fit_seed(--seed)``, which is
    why ``--fit-seed 0`` keeps this formula: those of ``--seed 0`` are the fits of ``--fit-seed 0``."""
    return seed_hash(f"fit|{seed}")


def check_fit_seed(seed: Any) -> None:
    """A :class:`UserError` unless ``seed`` is a whole number ≥ 0 (a bool is not one)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"--fit-seed must be a whole number ≥ 0, got {seed!r}; e.g. --fit-seed 1")


def check_fit_minutes(minutes: Any) -> None:
    """A :class:`UserError` unless ``minutes`` (``--fit-minutes``) is ``None`` or a number of minutes > 0."""
    if minutes is not None and not (isinstance(minutes, (int, float)) and 0 < minutes < float("inf")):
        raise UserError(f"--fit-minutes {minutes}: give a number of minutes > 0, e.g. --fit-minutes 8")
