"""Running a sweep's trials: in this process one after another (``local``) or as Ray tasks (``ray``).

Both engines run the same function, :func:`execute` (``mtbench.run.runner.run`` of the trial's RunSpec, with
``torch.set_num_threads(cpus_per_trial)``), and hand its record back to :func:`run_trials` in this process,
which alone writes results (atomically, :func:`mtbench.results.write_result`): Ray's workers need no access
to the leaderboard folder, and a killed worker or node leaves nothing behind. Ray runs plain tasks
(``ray.remote`` with ``num_cpus``/``num_gpus`` per trial, fractions of a GPU allowed) rather than Ray Tune:
skipping and resuming come from the result files and the claims (:mod:`mtbench.board.claims`), not from an
experiment state, and a task is all a trial needs.

Before it starts, a trial is skipped when its result exists, when another live sweep holds its claim, or
when it failed in an earlier sweep (recorded in ``<storage>/failures/``; ``retry_failed`` reruns those).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtbench.board.claims import Claim, claim, clear_stale
from mtbench.board.sweep import Trial, existing
from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError
from mtbench.run.spec import RunSpec

ENGINES = ("local", "ray")
DEFAULT_STORAGE = Path("~/.cache/mtbench/ray")
RAY_MISSING = "--engine ray needs Ray: pip install 'mtbench[ray]' (or use --engine local)"


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def default_engine() -> str:
    return "ray" if ray_available() else "local"


def execute(spec: RunSpec, threads: int, malloc: bool) -> dict[str, Any]:
    """Run one trial here and return its record: ``doc`` or a one-line ``error``, ``start``/``end`` (epoch
    seconds), ``node`` and ``pid``. Never raises for the trial's own failure."""
    import torch

    from mtbench.core.runtime import tune_malloc
    from mtbench.run import runner

    torch.set_num_threads(threads)
    if malloc:
        tune_malloc()
    out: dict[str, Any] = {"start": time.time(), "node": socket.gethostname(), "pid": os.getpid()}
    try:
        out["doc"], _ = runner.run(dataclasses.replace(spec, out=None, progress=False))
    except UserError as exc:
        out["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - one trial's failure must not stop the others
        out["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    out["end"] = time.time()
    return out


class LocalEngine:
    """One trial at a time, in this process."""

    name = "local"
    slots = 1

    def __init__(self, cpus_per_trial: int = 1, malloc: bool = True) -> None:
        self.cpus, self.malloc, self.queue = cpus_per_trial, malloc, deque()

    def submit(self, trial: Trial) -> Any:
        self.queue.append(trial)
        return trial

    def wait(self) -> list[tuple[Any, dict[str, Any]]]:
        import torch

        t = self.queue.popleft()
        before = torch.get_num_threads()
        try:
            return [(t, execute(t.spec, self.cpus, self.malloc))]
        finally:
            torch.set_num_threads(before)

    def cancel(self) -> None:
        self.queue.clear()

    def shutdown(self) -> None:
        pass


class RayEngine:
    """Trials as Ray tasks of ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs each, as many at a time as
    the cluster's resources hold. Connects to ``address`` (or ``$RAY_ADDRESS``), else starts a local instance
    with its files under ``storage``; an instance already initialised in this process is used as it is."""

    name = "ray"

    def __init__(self, cpus_per_trial: int = 1, gpus_per_trial: float = 0.0, address: str | None = None,
                 storage: Path | None = None, num_cpus: int | None = None, malloc: bool = True) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(RAY_MISSING) from None
        self.ray, self.started = ray, False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if address:
                kwargs["address"] = address
            else:
                temp = (storage or DEFAULT_STORAGE).expanduser().resolve()
                temp.mkdir(parents=True, exist_ok=True)
                kwargs.update(_temp_dir=str(temp), num_cpus=num_cpus)
            try:
                ray.init(**kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(f"cannot start or join Ray ({address or 'local'}): {str(exc).splitlines()[0]}") \
                    from None
            self.started = True
        resources = ray.cluster_resources()
        if gpus_per_trial > resources.get("GPU", 0):
            self.shutdown()
            raise UserError(f"--gpus-per-trial {gpus_per_trial}: the Ray cluster has {resources.get('GPU', 0):g} "
                            f"GPU(s); lower it, or 0 to run on the CPU")
        by_cpu = int(resources.get("CPU", 1) // max(cpus_per_trial, 1e-9))
        by_gpu = int(resources.get("GPU", 0) / gpus_per_trial + 1e-9) if gpus_per_trial else by_cpu
        self.slots = max(1, min(by_cpu, by_gpu))
        self.remote = ray.remote(execute).options(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0)
        self.cpus, self.malloc, self.refs = max(1, int(cpus_per_trial)), malloc, {}

    def submit(self, trial: Trial) -> Any:
        ref = self.remote.remote(trial.spec, self.cpus, self.malloc)
        self.refs[ref] = trial
        return ref

    def wait(self) -> list[tuple[Any, dict[str, Any]]]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        done = []
        for ref in ready:
            self.refs.pop(ref)
            try:
                done.append((ref, self.ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a dead worker or node: the trial failed, the sweep goes on
                done.append((ref, {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}",
                                   "node": "?", "start": time.time(), "end": time.time()}))
        return done

    def cancel(self) -> None:
        for ref in list(self.refs):
            self.ray.cancel(ref, force=True)
        self.refs.clear()

    def shutdown(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False


def make_engine(name: str | None, *, cpus_per_trial: int = 1, gpus_per_trial: float = 0.0,
                address: str | None = None, storage: Path | None = None, num_cpus: int | None = None,
                malloc: bool = True) -> LocalEngine | RayEngine:
    name = name or default_engine()
    if name == "local":
        if gpus_per_trial and gpus_per_trial != 1:
            raise UserError(f"--gpus-per-trial {gpus_per_trial}: the local engine runs one trial at a time on "
                            f"--device; use --engine ray to share GPUs")
        return LocalEngine(cpus_per_trial, malloc)
    if name == "ray":
        return RayEngine(cpus_per_trial, gpus_per_trial, address, storage, num_cpus, malloc)
    raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")


# -- failures of earlier sweeps -----------------------------------------------------------------------------
def failure_file(storage: Path, t: Trial) -> Path:
    name = hashlib.sha256(f"{t.folder.resolve()}|{t.key}".encode()).hexdigest()[:24]
    return storage.expanduser() / "failures" / f"{name}.json"


def earlier_failure(storage: Path, t: Trial) -> str | None:
    try:
        return json.loads(failure_file(storage, t).read_text())["error"]
    except (OSError, ValueError, KeyError):
        return None


# -- the sweep ----------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    trial: Trial
    status: str  # done, exists, claimed, failed, failed-earlier
    path: Path | None = None
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    outcomes: list[Outcome]
    seconds: float
    interrupted: bool = False

    def count(self, *status: str) -> int:
        return sum(o.status in status for o in self.outcomes)

    def table(self) -> str:
        done, skipped = self.count("done"), self.count("exists", "claimed")
        failed, earlier = self.count("failed"), self.count("failed-earlier")
        rate = f"{done / (self.seconds / 3600):.0f}" if self.seconds > 0 and done else "0"
        rows = [("trials", "done", "skipped", "failed", "wall", "rows/hour"),
                (str(len(self.outcomes)), str(done), str(skipped), str(failed + earlier), f"{self.seconds:.1f} s",
                 rate)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        if earlier:
            lines.append(f"{earlier} failed in an earlier sweep and did not run again: add --retry-failed")
        if self.interrupted:
            lines.append("interrupted: run the same command again to run what is missing")
        return "\n".join(lines)


def _accuracy(doc: dict[str, Any] | None) -> str:
    try:
        return f"{doc['accuracy']['mean']:.4f}"  # type: ignore[index]
    except (TypeError, KeyError):
        return "?"


def run_trials(trials: list[Trial], engine: LocalEngine | RayEngine, storage: Path = DEFAULT_STORAGE,
               retry_failed: bool = False, progress: bool = True,
               echo: Callable[[str], Any] = print) -> Report:
    """Run the ``trials`` that have no result yet on ``engine``: claim each, run it, write its result, release
    it. Returns what happened to each; Ctrl-C (or SIGTERM turned into KeyboardInterrupt) cancels the running
    trials, releases their claims and returns the report marked interrupted."""
    from tqdm.auto import tqdm

    from mtbench.results import write_result

    storage = Path(storage).expanduser()
    n, start = len(trials), time.monotonic()
    bar = tqdm(total=n, unit="trial", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    say = bar.write if progress else echo
    outcomes: dict[int, Outcome] = {}
    pending = deque(enumerate(trials, 1))
    running: dict[Any, tuple[int, Trial, Claim]] = {}

    def finish(i: int, outcome: Outcome, line: str) -> None:
        outcomes[i] = outcome
        say(f"[{i}/{n}] {line}")
        bar.update(1)

    interrupted = False
    try:
        while pending or running:
            while pending and len(running) < engine.slots:
                i, t = pending.popleft()
                if (path := existing(t)) is not None:
                    clear_stale(t.folder, t.digest)
                    finish(i, Outcome(t, "exists", path), f"skip   {t.summary}: result exists ({path.name})")
                    continue
                if not retry_failed and (error := earlier_failure(storage, t)) is not None:
                    finish(i, Outcome(t, "failed-earlier", error=error),
                           f"skip   {t.summary}: failed in an earlier sweep ({error}); --retry-failed reruns it")
                    continue
                held = claim(t.folder, t.digest)
                if held is None:
                    finish(i, Outcome(t, "claimed"), f"skip   {t.summary}: another sweep is running it")
                    continue
                if (path := existing(t)) is not None:  # finished by another sweep since we looked
                    held.release()
                    finish(i, Outcome(t, "exists", path), f"skip   {t.summary}: result exists ({path.name})")
                    continue
                if t.spec.checkpoint_every is not None:  # its saved states live in the sweep's storage
                    t = dataclasses.replace(t, spec=dataclasses.replace(
                        t.spec, state_dir=str(storage / "states" / t.digest)))
                running[engine.submit(t)] = (i, t, held)
                say(f"[{i}/{n}] start  {t.summary} ({engine.name})")
            if not running:
                continue
            for handle, record in engine.wait():
                i, t, held = running.pop(handle)
                try:
                    took = record.get("end", 0) - record.get("start", 0)
                    where = f"node {record.get('node', '?')}"
                    if "doc" in record:
                        try:
                            path = write_result(record["doc"], t.folder)
                        except (ValueError, UserError) as exc:
                            record = {**record, "error": str(exc).splitlines()[0]}
                        else:
                            failure_file(storage, t).unlink(missing_ok=True)
                            device = record["doc"]["provenance"]["device"]
                            finish(i, Outcome(t, "done", path, record=record),
                                   f"done   {t.summary}: {where}, {device}, accuracy {_accuracy(record['doc'])}, "
                                   f"{took:.1f} s")
                            continue
                    error = record.get("error", "no result")
                    atomic_write(failure_file(storage, t), lambda tmp: tmp.write_text(json.dumps(
                        {"error": error, "trial": json.loads(t.key), "folder": str(t.folder), "when": time.time()})))
                    finish(i, Outcome(t, "failed", error=error, record=record),
                           f"FAILED {t.summary}: {where}: {error}")
                finally:
                    held.release()
    except KeyboardInterrupt:
        interrupted = True
        engine.cancel()
        for _, t, held in running.values():
            held.release()
        running.clear()
    finally:
        bar.close()
        engine.shutdown()
    done = [outcomes[i] for i in sorted(outcomes)]
    return Report(done, time.monotonic() - start, interrupted)
