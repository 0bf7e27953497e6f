"""Long evaluations saved and resumed, beside the fit's state (:mod:`mtbench.run.resume`).

A run with ``--checkpoint-every MINUTES`` saves its evaluation too: after the episode (or chunk of episodes) in
progress when ``MINUTES`` have passed since the last save, after an episode or chunk that took
:data:`LONG_UNIT_S` or more, and when Ctrl-C or SIGTERM arrives, the scores of the episodes done so far are written
atomically to ``<out>/.resume/<run>.evaluation.pt``, next to the fit's state, which is kept until the result is
written. A signal waits for the episode or chunk in progress to end only while episodes done are not saved yet (at
most one short unit); otherwise, as in a long unit (an X-ray transfer trial of Reptile takes minutes on a CPU) or
for a second signal, it stops the run at once and the unit in progress is adapted again on ``--resume``.
``mtbench run ... --resume`` restores the fit, skips the episodes already scored and goes on from the next one:
the evaluation of an Omniglot 20-way or miniImageNet Reptile row takes hours on a CPU, longer than a session or a
GPU lease. Each episode is adapted on its own (a chunk's episodes as they are adapted
together), so the per-episode accuracies are those of an uninterrupted run; ``evaluation.seconds`` and the
adaptation times add the saved part's, and ``fit.notes`` says that the evaluation was resumed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch
from torch import Tensor

from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError
from mtbench.core.runtime import device_name, mixed_devices_note, ran_on
from mtbench.run.resume import UNREADABLE, Plan, Signals, differences, evaluation_path

FORMAT, VERSION = "mtbench evaluation state", 1
#: an episode or chunk that takes this long is saved as soon as it ends, so that a signal during the next one (as
#: long, likely) has nothing unsaved to wait for: a save costs milliseconds, under 0.1 % of such a unit
LONG_UNIT_S = 5.0


@dataclass(frozen=True)
class Progress:
    """The first ``episodes`` episodes scored: their accuracy at each scored step (``float[episodes, steps]``,
    on the CPU), each step's cumulative adaptation ms summed over them (over their chunks on a batched path),
    the steps' numbers and the evaluation seconds so far."""

    episodes: int
    accs: Tensor
    ms_sums: list[float]
    step_numbers: list[int]
    seconds: float


class EvaluationState:
    """The evaluation's saving and resuming for a run whose fit :class:`~mtbench.run.resume.Plan` saves its state.

    ``resumed`` is the saved :class:`Progress` a ``--resume`` continues (``None``: start at the first episode);
    the evaluator calls :meth:`boundary` after each episode or chunk, inside :meth:`deferred_signals`."""

    def __init__(self, plan: Plan, episodes_sha: str, episodes: int, fitted: int) -> None:
        self.path = evaluation_path(plan)
        self.every_s = plan.every_s
        # ``fitted``: the iterations the evaluated fit ran, which the plan's identity (its budget's) does not say
        self.identity = {**plan.identity, "episodes_sha": episodes_sha, "episodes": episodes, "fitted": fitted}
        self.saves, self.saving_seconds = 0, 0.0
        self.last_save = self.last_boundary = time.monotonic()
        #: whether every episode scored so far is saved (or there is none): a signal then has nothing to wait for
        self.all_saved = True
        self.signals = Signals()
        self.device = device_name(torch.device(plan.device))
        #: the devices the saved part ran on, each with its seconds (a state saved before they were recorded: unknown)
        self.devices_before: list[list[Any]] = []
        self.resumed = self._read() if plan.resume and self.path.exists() else None

    def _read(self) -> Progress:
        fix = f"delete {self.path} to evaluate from the first episode"
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except UNREADABLE as exc:
            first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--resume: {self.path} is damaged (truncated or not an evaluation state: {first}); "
                            f"{fix}") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("version") != VERSION:
            raise UserError(f"--resume: {self.path} is not an evaluation state this mtbench wrote; {fix}")
        if diff := differences(blob["identity"], self.identity):
            raise UserError(f"--resume: {self.path} is the evaluation of another run ({'; '.join(diff[:3])}); {fix}")
        self.devices_before = blob.get("devices") or [[None, float(blob["seconds"])]]
        return Progress(int(blob["episodes"]), blob["accs"], [float(x) for x in blob["ms_sums"]],
                        [int(x) for x in blob["step_numbers"]], float(blob["seconds"]))

    def devices(self, seconds: float) -> list[list[Any]]:
        """The devices the evaluation has run on when ``seconds`` of it are done, each with its seconds."""
        return ran_on(self.devices_before, self.device, seconds - (self.resumed.seconds if self.resumed else 0.0))

    def boundary(self, progress: Callable[[], Progress]) -> None:
        """After an episode or a chunk: save ``progress()`` when ``--checkpoint-every``'s period has passed, the unit
        took :data:`LONG_UNIT_S` or more, or a signal is waiting, then let a waiting signal's own handler run."""
        now = time.monotonic()
        long_unit, self.last_boundary = now - self.last_boundary >= LONG_UNIT_S, now
        due = self.every_s is not None and now - self.last_save >= self.every_s
        self.all_saved = False
        if due or long_unit or self.signals.pending is not None:
            self.save(progress())
        self.signals.fire()

    def save(self, p: Progress) -> None:
        began = time.monotonic()
        blob = {"format": FORMAT, "version": VERSION, "identity": self.identity, "episodes": p.episodes,
                "accs": p.accs.cpu(), "ms_sums": p.ms_sums, "step_numbers": p.step_numbers, "seconds": p.seconds,
                "devices": self.devices(p.seconds),
                "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write(self.path, lambda tmp: torch.save(blob, tmp), what="evaluation state")
        self.saves += 1
        self.last_save = self.last_boundary = time.monotonic()
        self.all_saved = True
        self.saving_seconds += self.last_save - began

    def notes(self, total: int, seconds: float) -> list[str]:
        """What the result's ``fit.notes`` say of the evaluation's saves and resume, after ``seconds`` of it."""
        out = []
        if self.resumed is not None:
            out.append(f"evaluation resumed at episode {self.resumed.episodes + 1} of {total} (evaluation.seconds "
                       f"and the adaptation times add the {self.resumed.seconds:.1f} s before it)")
            if mixed := mixed_devices_note("evaluation.seconds", self.devices(seconds)):
                out.append(mixed)
        if self.saves:
            out.append(f"evaluation state saved {self.saves} times ({self.saving_seconds:.1f} s)")
        return out

    def deferred_signals(self) -> contextlib.AbstractContextManager[None]:
        """Ctrl-C or SIGTERM during the evaluation, while episodes done are not saved, waits for the episode or
        chunk in progress to end, where the state is saved and the signal's own handler runs; when all are saved,
        or for a second signal, the handler runs at once (the unit in progress is lost, and adapted again by
        ``--resume`` as it would have been). Main thread only."""
        return self.signals.deferring(self.every_s is not None, lambda: not self.all_saved)


__all__ = ["EvaluationState", "Progress"]
