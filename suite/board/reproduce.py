"""``mtbench reproduce``: re-run a result's recorded spec and compare it, episode by episode, with the file.

A result file can be edited consistently (per-episode accuracies, mean and interval together) so that
:mod:`mtbench.results.integrity` finds nothing wrong; only running the method again can show that its numbers
did not come from it. :func:`reproduce` rebuilds the :class:`~mtbench.run.spec.RunSpec` from what the result
recorded (method and every hparam, dataset and source, protocol and seed, fit seed, budget, precision,
compilation, checkpoint, CPU threads), runs it, and pairs the new per-episode accuracies with the recorded ones
on the same episodes (``episodes_sha``):

* on the same CPU (device name, threads, torch version) the re-run must be **identical**, episode for
  episode: a run is deterministic there;
* elsewhere floating-point differences may flip a few predictions, so the verdict allows a paired mean
  difference of at most :data:`TOLERANCE` (one accuracy point). That includes the same GPU: its convolution
  kernels do not promise the same rounding twice (two runs of a method that fits nothing, on one GPU, can differ
  by a prediction).

Anything else is ``DIFFERS``. A submitted method is re-run as ``mtbench submit`` ran it, in the sandbox (its
file must be where the result says, with the recorded sha256). With ``record``, the re-run is appended to the file's ``reproduced`` list (who,
when, where, verdict), and the file is rewritten atomically as the current schema.
"""

from __future__ import annotations

import getpass
import json
import math
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mtbench.core.atomic import atomic_write
from mtbench.core.errors import UserError
from mtbench.core.metrics import mean_ci95
from mtbench.data.base import sha256_file
from mtbench.results import partial_fit

#: the largest paired mean difference (re-run minus recorded) accepted when the hardware differs
TOLERANCE = 0.01


@dataclass(frozen=True)
class Outcome:
    """One result re-run: its verdict and what it rests on."""

    path: Path
    verdict: str  # REPRODUCED or DIFFERS
    identical: bool
    same_hardware: bool
    exact: bool  # the same CPU: the re-run must be identical
    mean_difference: float
    ci95: float
    episodes: int
    changed: int  # episodes whose accuracy differs
    notes: tuple[str, ...]
    record: dict[str, Any]

    def line(self) -> str:
        """One line for the terminal."""
        how = ("identical on every episode" if self.identical else
               f"{self.changed}/{self.episodes} episodes differ, paired difference {self.mean_difference:+.4f} "
               f"± {self.ci95:.4f} (95% CI)")
        rule = ("same hardware: must be identical" if self.exact else
                f"same GPU, not deterministic: tolerance {TOLERANCE}" if self.same_hardware else
                f"other hardware: tolerance {TOLERANCE}")
        return f"{self.verdict}  {self.path}: {how} ({rule})"


def spec_of(doc: dict[str, Any], data_root: str | None, device: str | None) -> Any:
    """The :class:`~mtbench.run.spec.RunSpec` that reproduces ``doc`` (a current-schema result); the device is
    the recorded type unless ``device`` says otherwise (``cuda`` where there is none: the CPU)."""
    import torch

    from mtbench.data.protocols import resolve
    from mtbench.run.spec import RunSpec

    p, prov = doc["protocol"], doc["provenance"]
    draws = ({"ways": p["ways"], "shots": p["shots"], "queries": p["queries"], "episodes": p["episodes"]}
             if p["kind"] == "episodes" else
             {"train_images": p["train_images"], "test_images": p["test_images"], "trials": p["trials"]})
    protocol = resolve(p["kind"], p["kind"], seed=p["seed"], **draws)
    if device is None:
        device = "cuda" if prov["device_type"] == "cuda" and torch.cuda.is_available() else "cpu"
    method, submission = doc["method"]["name"], doc["submission"]
    if submission:
        source = Path(submission["source"])
        if not source.is_file() or sha256_file(source) != submission["source_sha256"]:
            raise UserError(f"the submission {source} is not here with sha256 {submission['source_sha256'][:12]}…: "
                            f"put the submitted file at that path to reproduce its result")
        method = f"{source}:{submission['class']}"
    init = doc["init"]
    if init and (not Path(init["path"]).is_file() or sha256_file(Path(init["path"])) != init["sha256"]):
        raise UserError(f"the run started from the checkpoint {init['path']} (sha256 {init['sha256'][:12]}…), which "
                        f"is not here: reproduce the run that wrote it first, with --save {init['path']}")
    hparams = tuple((k, "none" if v is None else str(v)) for k, v in doc["method"]["hparams"].items())
    return RunSpec(method=method, dataset=doc["dataset"]["name"], episodes=protocol, budget=doc["budget"]["name"],
                   hparams=hparams, device=device, data_root=data_root, out=None, download=False, progress=False,
                   command=prov["command"], init=init["path"] if init else None,
                   source=doc["source"]["name"] if doc["source"] else None, precision=prov["precision"],
                   compile=prov["compile"], submission=submission, fit_seed=doc["fit"]["seed"],
                   until=doc["fit"]["iterations"] if partial_fit(doc) else None)


def _notes(doc: dict[str, Any], again: dict[str, Any]) -> list[str]:
    """What differs between the recorded run and the re-run besides the numbers: code, versions."""
    before, now = doc["provenance"], again["provenance"]
    notes = []
    if before["git_commit"] != now["git_commit"] or now["git_dirty"]:
        notes.append(f"code: recorded at {str(before['git_commit'])[:12]}, re-run at {str(now['git_commit'])[:12]}"
                     + (" with uncommitted changes" if now["git_dirty"] else ""))
    for part in ("method", "dataset"):
        if doc[part]["version"] != again[part]["version"]:
            notes.append(f"{part} version: recorded {doc[part]['version']}, here {again[part]['version']}")
    if before["torch"] != now["torch"]:
        notes.append(f"torch: recorded {before['torch']}, here {now['torch']}")
    return notes


def compare(doc: dict[str, Any], again: dict[str, Any], path: Path) -> Outcome:
    """The verdict on ``again`` (the re-run) against ``doc`` (the recorded result)."""
    before, now = doc["provenance"], again["provenance"]
    same_hardware = (before["device"], before["device_type"], before["threads"], before["torch"]) == (
        now["device"], now["device_type"], now["threads"], now["torch"])
    exact = same_hardware and now["device_type"] == "cpu"
    notes = _notes(doc, again)
    old, new = doc["accuracy"]["per_episode"], again["accuracy"]["per_episode"]
    if doc["protocol"]["episodes_sha"] != again["protocol"]["episodes_sha"] or len(old) != len(new):
        notes.insert(0, "the re-run drew other episodes (the data or the episode code differ): nothing to pair")
        diffs = [0.0]
        identical, verdict, mean, ci, changed = False, "DIFFERS", float("nan"), float("nan"), len(old)
    else:
        diffs = [b - a for a, b in zip(old, new)]
        mean, ci = mean_ci95(diffs)
        changed = sum(d != 0 for d in diffs)
        identical = changed == 0
        ok = identical or (not exact and abs(mean) <= TOLERANCE)
        verdict = "REPRODUCED" if ok else "DIFFERS"
    record = {"by": f"{getpass.getuser()}@{socket.gethostname()}",
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "device": now["device"], "git_commit": now["git_commit"], "verdict": verdict,
              "identical": identical, "mean_difference": 0.0 if math.isnan(mean) else mean}
    return Outcome(path, verdict, identical, same_hardware, exact, mean, ci, len(old), changed, tuple(notes), record)


def reproduce(path: Path, data_root: str | None = None, device: str | None = None, record: bool = False) -> Outcome:
    """Re-run the result at ``path`` and compare (see the module's docstring); with ``record``, append the
    re-run to the file's ``reproduced`` list."""
    import torch

    from mtbench.results import read_result
    from mtbench.run import runner

    doc = read_result(Path(path))
    spec = spec_of(doc, data_root, device)
    before = torch.get_num_threads()
    if spec.device == "cpu":
        torch.set_num_threads(doc["provenance"]["threads"])
    try:
        if doc["submission"]:  # a submitted method runs only in the sandbox, as mtbench submit ran it
            from mtbench.board.submit import parse, submit

            again, _ = submit(parse(spec.method), spec, dict(spec.hparams), None, None, echo=lambda _: None)
        else:
            again, _ = runner.run(spec)
    finally:
        torch.set_num_threads(before)
    outcome = compare(doc, again, Path(path))
    if record:
        doc["reproduced"].append(outcome.record)
        text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
        atomic_write(Path(path), lambda tmp: tmp.write_text(text), what="result")
    return outcome


def reproduce_many(paths: list[Path], data_root: str | None = None, device: str | None = None,
                   record: bool = False, echo: Any = print) -> int:
    """:func:`reproduce` each of ``paths`` in turn, one line per result (and its notes); the number that DIFFER.
    A result that cannot be re-run here (a missing checkpoint, data, a method not registered) is reported in
    one line and counted as not reproduced."""
    failed = 0
    for path in paths:
        try:
            outcome = reproduce(path, data_root, device, record)
        except UserError as exc:
            echo(f"NOT RUN     {path}: {exc}")
            failed += 1
            continue
        echo(outcome.line())
        for note in outcome.notes:
            echo(f"            note: {note}")
        failed += outcome.verdict != "REPRODUCED"
    return failed

