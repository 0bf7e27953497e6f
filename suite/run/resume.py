"""Long fits saved and resumed: ``mtbench run --checkpoint-every MINUTES`` and ``--resume``.

The fit's whole state is written atomically to ``<out>/.resume/<method>-<dataset>-<hash>.pt``, the hash
being that of the run's identity (:func:`identity`: method and hparams, data, protocol, budget, fit seed,
``--init``, precision, compilation, device type) less the code's version (the mtbench version and the sha256
of the method's source file), which the file records and a resume checks; the checkout's commit is recorded,
and a resume under another one is said in ``fit.notes``. It is written at an iteration boundary of :meth:`FitContext.loop
<mtbench.methods.FitContext.loop>` (:class:`FitState` is the context's hook) every ``MINUTES``, at the end
of each loop, and when Ctrl-C or SIGTERM arrives during an iteration (the signal waits for the iteration
to end; a second one stops at once). It holds every module of the method, everything the fit
``track`` ed (optimisers, schedulers, local modules, generators), the fit generator's state, the loop
and iteration reached, the fit seconds so far and the context's counters and notes. A resume restores
it when the fit reaches the loop it was saved in (earlier loops are skipped; the code before each loop
runs again, so objects are rebuilt before their state is loaded), which on the CPU continues the exact
computation: the same per-episode accuracies as an uninterrupted run. The file is removed once the
run's result is written, unless ``--until`` stopped the fit part-way (a partial fit): its state is saved where it
stopped and kept, for ``--resume`` with a later ``--until``, or none, to continue it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import pickle
import re
import signal
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtbench import __version__
from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError
from mtbench.core.runtime import device_name, mixed_devices_note, ran_on
from mtbench.methods import FitContext, Method
from mtbench.results.provenance import git_state

FORMAT, VERSION = "mtbench fit state", 1
#: what ``torch.load`` raises on a file that is truncated or not a saved state
UNREADABLE = (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError,
              pickle.UnpicklingError, zipfile.BadZipFile)
#: the folder under ``--out`` that holds the saved fits
FOLDER = ".resume"
#: a saved evaluation's file: the fit state's name with this in place of ``.pt``
EVALUATION_SUFFIX = ".evaluation.pt"


def identity(spec: Any, method_cls: type[Method], hparams: Any, dataset_cls: type, source_cls: type,
             iterations: int, device: torch.device, init_sha: str | None) -> dict[str, Any]:
    """What makes a saved fit this run's: a resume with any of it changed is refused, naming what differs."""
    episodes = spec.episodes
    return {
        "method": {"name": method_cls.name, "version": method_cls.version, "hparams": dataclasses.asdict(hparams)},
        "dataset": {"name": dataset_cls.name, "version": dataset_cls.version},
        "source": {"name": source_cls.name, "version": source_cls.version},
        "protocol": {"kind": type(episodes).__name__, **dataclasses.asdict(episodes)},
        "budget": {"name": str(spec.budget), "iterations": iterations},
        "fit_seed": getattr(spec, "fit_seed", None),
        "init_sha256": init_sha, "precision": spec.precision, "compile": spec.compile, "device": device.type,
        "code": {"mtbench": __version__, "method_source": _source_sha256(method_cls)},
    }


def _source_sha256(cls: type) -> str | None:
    """sha256 of the file that defines the method (its fit loop), or ``None`` where there is none."""
    try:
        return hashlib.sha256(Path(inspect.getfile(cls)).read_bytes()).hexdigest()
    except (TypeError, OSError):
        return None


def state_path(out: str | Path, ident: dict[str, Any]) -> Path:
    """``<out>/.resume/<method>-<dataset>-<hash>.pt``: one file per run, whatever the code's version."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in ident.items() if k != "code"}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{ident['method']['name']}-{ident['dataset']['name']}")
    return Path(out) / FOLDER / f"{name}-{digest}.pt"


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        return {k: v for key, value in doc.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: doc}


def differences(saved: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """``["method.hparams.lr 0.002 there, 0.001 here", ...]``: what differs between two identities, in the
    order of :func:`identity` (the method's name before its hparams)."""
    a, b = _flat(saved), _flat(here)
    return [f"{k} {a.get(k, '(none)')} there, {b.get(k, '(none)')} here" for k in dict.fromkeys([*b, *a])
            if a.get(k) != b.get(k)]


def read_state(path: Path) -> dict[str, Any]:
    """A saved fit, checked to be whole; a :class:`UserError` naming the file when it is not."""
    fix = f"delete {path} and start over without --resume"
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise UserError(f"--resume: cannot read {path} (permission denied); make it readable") from None
    except UNREADABLE as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--resume: {path} is damaged (truncated or not a fit state: {first}); {fix}") from None
    keys = {"format", "version", "identity", "stage", "iteration", "seconds", "tasks", "images", "notes", "modules",
            "tracked", "generator"}
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or not keys <= blob.keys():
        raise UserError(f"--resume: {path} is not a fit state written by mtbench run --checkpoint-every; {fix}")
    if blob["version"] != VERSION:
        raise UserError(f"--resume: {path} is a fit state of format {blob['version']}, this mtbench reads {VERSION}; "
                        f"resume it with the mtbench that wrote it, or {fix}")
    return blob


@dataclass(frozen=True)
class Plan:
    """A run's saving and resuming: where its state goes, every how many seconds, the state to resume from, and
    the checkout's commit (recorded, not part of the identity: see :func:`plan`)."""

    path: Path
    identity: dict[str, Any]
    every_s: float | None
    saved: dict[str, Any] | None
    commit: str | None = None
    resume: bool = False  # --resume: continue the saved fit, and the saved evaluation where there is one
    device: str = "cpu"  # the run's device, as --device names it: which one each part ran on is recorded


def plan(spec: Any, ident: dict[str, Any]) -> Plan | None:
    """Check ``--checkpoint-every`` / ``--resume`` and read the state to resume from; ``None`` without either.

    Refused (nothing written): a period that is not a number of minutes > 0, no ``--out``, ``--resume``
    without a saved fit of this run or with one of another run (another mtbench version or method source file
    included), a damaged file, and a saved fit of this run that a new run without ``--resume`` would overwrite.
    A commit of the checkout that left the method's file as it was (an unrelated change) does not stop a
    resume: the result's ``fit.notes`` name both commits."""
    every, resume = getattr(spec, "checkpoint_every", None), getattr(spec, "resume", False)
    state_dir = getattr(spec, "state_dir", None)
    # --until, or --fit-minutes at an iteration found as it runs, stops a fit part-way: its state is kept
    stops = getattr(spec, "until", None) is not None or getattr(spec, "fit_minutes", None) is not None
    if every is None and not resume and (not stops or spec.out is None):
        return None  # (a run that writes nothing, mtbench reproduce's, keeps no state of a partial fit either)
    if every is not None and not (isinstance(every, (int, float)) and 0 < every < float("inf")):
        raise UserError(f"--checkpoint-every must be a number of minutes > 0, got {every}; e.g. --checkpoint-every 30")
    if (state_dir or spec.out) is None:
        raise UserError("--checkpoint-every, --resume and --until keep the fit's state under --out; give --out a folder")
    path = state_path(state_dir or spec.out, ident)
    evaluated = _evaluation_file(path)
    # a state folder of its own (a trial of mtbench official's) is continued from whenever it holds this run's state
    resume = resume or (state_dir is not None and (path.exists() or evaluated.exists()))
    saved = None
    if resume and not path.exists() and evaluated.exists():
        pass  # a fit with nothing to save (no iterations, e.g. scratch's): its evaluation alone was saved
    elif resume:
        if not path.exists():
            raise UserError(_missing(path, ident))
        saved = read_state(path)
        if diff := differences(saved["identity"], ident):
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            raise UserError(f"--resume: {path} is the fit of another run ({'; '.join(diff[:3])}{more}); resume with "
                            f"the code and command that wrote it, or delete it to start over without --resume")
    elif path.exists() or evaluated.exists():
        what = "fit" if path.exists() else "evaluation"
        raise UserError(f"a saved {what} of this run is at {path if path.exists() else evaluated}: add --resume to "
                        f"continue it, or delete it to start over")
    return Plan(path, ident, every * 60.0 if every is not None else None, saved, git_state()[0], resume,
                str(ident["device"]))


def _missing(path: Path, ident: dict[str, Any]) -> str:
    """The error of ``--resume`` without a saved fit of this run, naming how the nearest one in the folder differs."""
    nearest: tuple[int, Path, list[str]] | None = None
    for other in sorted(path.parent.glob("*.pt")) if path.parent.is_dir() else []:
        if other.name.endswith(EVALUATION_SUFFIX):  # a saved evaluation, not a fit
            continue
        try:
            diff = differences(read_state(other)["identity"], ident)
        except UserError:
            continue
        if nearest is None or len(diff) < nearest[0]:
            nearest = (len(diff), other, diff)
    if nearest is None:
        return (f"--resume: no saved fit in {path.parent} (a run writes one with --checkpoint-every MINUTES); "
                f"drop --resume to start over")
    _, other, diff = nearest
    more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
    return (f"--resume: no saved fit of this run in {path.parent}; the nearest, {other.name}, is of another run "
            f"({'; '.join(diff[:3])}{more}); run the command that wrote it, or drop --resume to start over")


def _state_of(obj: Any) -> Any:
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _load_tracked(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
        return
    groups = getattr(obj, "param_groups", None)
    kept = [{k: v for k, v in g.items() if isinstance(v, Tensor)} for g in groups] if groups is not None else []
    obj.load_state_dict(state)
    # a capturable optimiser's learning rate is a device tensor a CUDA graph reads: keep that tensor, set its value
    for group, tensors in zip(groups or [], kept):
        for key, tensor in tensors.items():
            with torch.no_grad():
                tensor.copy_(torch.as_tensor(group[key]))
            group[key] = tensor


class FitState:
    """The :class:`~mtbench.methods.contract.FitHook` of a run with ``--checkpoint-every`` or ``--resume``."""

    def __init__(self, p: Plan, method: Method, ctx: FitContext, clock: Callable[[], float]) -> None:
        self.plan, self.method, self.ctx, self.clock = p, method, ctx, clock
        self.started = clock()
        self.seconds_before = float(p.saved["seconds"]) if p.saved else 0.0
        # the devices of the parts before (a state saved before they were recorded: one part, device unknown)
        self.devices_before = (p.saved.get("devices") or [[None, self.seconds_before]]) if p.saved else []
        self.saving_seconds, self.saves = 0.0, 0
        # where this process starts: a boundary anywhere else means it ran iterations (a part of the fit's own)
        self.position, self.ran = ((p.saved["stage"], p.saved["iteration"]) if p.saved else None), False
        self.last_save = time.monotonic()
        self.totals: dict[int, int] = {}
        self.restored = p.saved is None
        self.signals = Signals()  # a signal waiting for the iteration's end
        ctx.hook = self

    def start(self, ctx: FitContext, stage: int, total: int) -> int:
        self.totals[stage] = total
        saved = self.plan.saved
        if saved is None or self.restored:
            return 0
        if stage < saved["stage"]:
            return total
        if stage > saved["stage"]:
            raise UserError(self._changed(f"it was saved in loop {saved['stage']}, which this fit never reached"))
        self._restore(saved)
        self.restored = True
        self.last_save = time.monotonic()
        return int(saved["iteration"])

    def boundary(self, ctx: FitContext, stage: int, iteration: int) -> None:
        if not self.restored:  # a loop skipped on the way to the saved one: its state is not this run's yet
            return
        self.ran = self.ran or (stage, iteration) != self.position
        due = ((self.plan.every_s is not None
                and (iteration == self.totals[stage] or time.monotonic() - self.last_save >= self.plan.every_s))
               or iteration == ctx.until)  # a fit stopped by --until keeps its state, for --resume to continue
        if due or self.signals.pending is not None:
            self.save(stage, iteration)
        self.signals.fire()

    def fit_seconds(self) -> float:
        """The fit's seconds: before the resume, plus this process's, less the time spent saving."""
        return self.seconds_before + self.clock() - self.started - self.saving_seconds

    def devices(self) -> list[list[Any]]:
        """The devices the fit has run on, each with its seconds (:func:`~mtbench.core.runtime.ran_on`); this
        process is a part once it has run an iteration (restoring a finished fit to evaluate it is none)."""
        if not self.ran:
            return [list(part) for part in self.devices_before]
        here = device_name(torch.device(self.plan.device))
        return ran_on(self.devices_before, here, self.fit_seconds() - self.seconds_before)

    def save(self, stage: int, iteration: int) -> None:
        """Write the state as it is at this boundary (iterations ``0 .. iteration - 1`` of loop ``stage`` done)."""
        began = time.monotonic()
        ctx = self.ctx
        blob = {
            "format": FORMAT, "version": VERSION, "identity": self.plan.identity, "stage": stage,
            "iteration": iteration, "seconds": self.fit_seconds(), "tasks": ctx.tasks, "images": ctx.images,
            "notes": list(ctx.notes), "modules": {k: m.state_dict() for k, m in self.method.modules().items()},
            "tracked": [{"kind": type(o).__name__, "state": _state_of(o)} for o in ctx.tracked],
            "generator": ctx.generator.get_state(), "git_commit": self.plan.commit, "devices": self.devices(),
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write(self.plan.path, lambda tmp: torch.save(blob, tmp), what="fit state")
        self.saves += 1
        self.last_save = time.monotonic()
        self.saving_seconds += self.last_save - began

    def _changed(self, what: str) -> str:
        return (f"--resume: {self.plan.path} does not fit this method's code ({what}); the code changed since it "
                f"was saved: delete it to start over without --resume")

    def _restore(self, saved: dict[str, Any]) -> None:
        ctx, modules = self.ctx, self.method.modules()
        if set(modules) != set(saved["modules"]):
            raise UserError(self._changed(f"modules {sorted(saved['modules'])} there, {sorted(modules)} here"))
        kinds = [t["kind"] for t in saved["tracked"]]
        if kinds != [type(o).__name__ for o in ctx.tracked]:
            raise UserError(self._changed(f"tracked {kinds} there, {[type(o).__name__ for o in ctx.tracked]} here"))
        try:
            for name, module in modules.items():
                module.load_state_dict(saved["modules"][name])
            for obj, entry in zip(ctx.tracked, saved["tracked"]):
                _load_tracked(obj, entry["state"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(self._changed(str(exc).strip().splitlines()[0][:160])) from None
        ctx.generator.set_state(saved["generator"])
        ctx.tasks, ctx.images, ctx.notes[:] = int(saved["tasks"]), int(saved["images"]), list(saved["notes"])

    def finish(self) -> None:
        """After the fit: a state never restored (its loop never reached) is an error; the result says what happened."""
        saved = self.plan.saved
        if not self.restored:
            raise UserError(self._changed(f"it was saved in loop {saved['stage']}, which this fit never reached"))
        if saved is not None:
            self.ctx.note(f"resumed from a saved fit at iteration {saved['iteration']} of loop {saved['stage'] + 1} "
                          f"(fit.seconds adds the {float(saved['seconds']):.1f} s before it; peak memory is the "
                          f"resumed part's)")
            if saved.get("git_commit") != self.plan.commit:
                self.ctx.note(f"fit saved at commit {saved.get('git_commit')}, resumed at commit {self.plan.commit} "
                              f"(the method's source file unchanged)")
            if mixed := mixed_devices_note("fit.seconds", self.devices()):
                self.ctx.note(mixed)
        if self.saves:
            self.ctx.note(f"fit state saved {self.saves} times ({self.saving_seconds:.1f} s, not in fit.seconds)")

    def deferred_signals(self) -> contextlib.AbstractContextManager[None]:
        """Ctrl-C or SIGTERM inside an iteration of the fit waits for the iteration's end, where the state is saved
        and the signal's own handler runs; outside one, or a second signal, runs it at once. Main thread only."""
        return self.signals.deferring(self.plan.every_s is not None, lambda: self.ctx.in_loop)


class Signals:
    """Ctrl-C and SIGTERM held back while a unit of work (a fit's iteration, an evaluation's episode or chunk)
    runs, so that a saved state can be written at its end: :meth:`deferring` installs the handler,
    :attr:`pending` says a signal waits, :meth:`fire` then runs that signal's own handler."""

    def __init__(self) -> None:
        self.pending: tuple[int, Any, Any] | None = None

    def fire(self) -> None:
        """Run the waiting signal's own handler, if one waits."""
        if self.pending is not None:
            signum, frame, handler = self.pending
            self.pending = None
            handler(signum, frame)

    @contextlib.contextmanager
    def deferring(self, enabled: bool, inside: Callable[[], bool]) -> Iterator[None]:
        """While ``enabled`` and in the main thread: a first signal that comes while ``inside()`` waits (for
        :meth:`fire` at the unit's end); outside a unit, or a second signal, runs its handler at once. One still
        waiting when the block ends (it came in the last unit) runs then."""
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def defer(signum: int, frame: Any) -> None:
            if inside() and self.pending is None:
                self.pending = (signum, frame, before[signum])
                return
            self.pending = None
            before[signum](signum, frame)

        installed = [s for s, h in before.items() if callable(h)]
        for s in installed:
            signal.signal(s, defer)
        try:
            yield
        finally:
            for s in installed:
                signal.signal(s, before[s])
        self.fire()


def evaluation_path(p: Plan) -> Path:
    """``<out>/.resume/<run>.evaluation.pt``: where the run's evaluation is saved (:mod:`mtbench.run.evaluation_state`)."""
    return _evaluation_file(p.path)


def _evaluation_file(fit_state: Path) -> Path:
    return fit_state.with_name(fit_state.stem + EVALUATION_SUFFIX)


def discard(p: Plan | None, *, keep_fit: bool = False) -> None:
    """The run's result is written: its saved evaluation is no longer needed, nor its saved fit unless ``keep_fit``
    (a partial fit's, which ``--resume`` continues: the fit it continues is another model, which the evaluation
    saved of this one must never stand for)."""
    if p is not None:
        if not keep_fit:
            p.path.unlink(missing_ok=True)
        evaluation_path(p).unlink(missing_ok=True)
