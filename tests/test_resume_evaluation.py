"""Resumable evaluations (``mtbench run --checkpoint-every MINUTES`` / ``--resume``, :mod:`mtbench.run.evaluation_state`):
a run that dies in its evaluation, resumed, scores every episode as an uninterrupted run does, on each of the
evaluator's three paths (episode by episode, ``predict_batch`` chunks, ``adapt_batch`` chunks) and for a method
with no fit to save; the saved state of another run, or a damaged one, is refused in one line; a new run never
overwrites a saved evaluation."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtbench.core.errors import UserError
from mtbench.core.runtime import device_name
from mtbench.data import DATASETS
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.methods import METHODS, make_hparams
from mtbench.run import evaluate as evaluator
from mtbench.run.evaluation_state import EvaluationState, Progress
from mtbench.run.resume import Plan
from mtbench.run.runner import RunSpec, run

EPISODES = 6
FITTED = 5  # the iterations the evaluated fit ran: part of a saved evaluation's identity


class Stop(Exception):
    """Stands for the process dying after the evaluation saved its progress."""


@pytest.fixture(scope="module")
def episodes():
    test = DATASETS.get("synthetic")(progress=False).load("test")
    return EpisodeSet(test, EpisodeSpec(5, 1, 2, EPISODES, seed=0))


def _method(name: str, overrides: dict[str, str], episodes: EpisodeSet):
    cls = METHODS.get(name)
    method = cls(make_hparams(cls, "synthetic", overrides, "2"), episodes.split.image_shape,
                 torch.Generator().manual_seed(0), torch.device("cpu"))
    method.prepare(5)
    return method


def _stop_after(monkeypatch, episodes_saved: int) -> None:
    """Every boundary saves (a period of ~0); the process "dies" once ``episodes_saved`` episodes are saved."""
    original = EvaluationState.save

    def save(self, p: Progress) -> None:
        original(self, p)
        if p.episodes >= episodes_saved:
            raise Stop

    monkeypatch.setattr(EvaluationState, "save", save)


# name, overrides, evaluate()'s keywords: each of the evaluator's paths, chunks of 2 episodes on the batched ones
PATHS = {
    "episode by episode": ("maml", {"meta_batch": "2"}, {"batched": False}),
    "predict_batch": ("protonet", {}, {"max_values": 2 * 5 * 3 * 3 * 16 * 16}),
    "adapt_batch": ("reptile", {"eval_steps": "3", "report_steps": "0,2"}, {"max_values": 2 * 5 * 3 * 3 * 16 * 16}),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_an_evaluation_resumed_scores_every_episode_as_an_uninterrupted_one(path, episodes, tmp_path, monkeypatch,
                                                                            one_thread) -> None:
    name, overrides, kwargs = PATHS[path]
    method = _method(name, overrides, episodes)
    whole = evaluator.evaluate(method, episodes, progress=False, **kwargs)
    plan = Plan(tmp_path / ".resume" / "run-abc.pt", {"run": name}, 1e-9, None)
    saver = EvaluationState(plan, episodes.sha, len(episodes), FITTED)
    stopped_at = 4 if path == "episode by episode" else 2
    with monkeypatch.context() as m:
        _stop_after(m, stopped_at)
        with pytest.raises(Stop):
            evaluator.evaluate(method, episodes, progress=False, saver=saver, **kwargs)
    saved = tmp_path / ".resume" / "run-abc.evaluation.pt"
    assert saved.exists() and not list(tmp_path.rglob("*.tmp"))
    again = EvaluationState(dataclasses.replace(plan, resume=True), episodes.sha, len(episodes), FITTED)
    assert again.resumed is not None and again.resumed.episodes == stopped_at
    calls = []
    original = type(method).adapt if path == "episode by episode" else None
    if original:  # the saved episodes are not adapted again
        monkeypatch.setattr(type(method), "adapt", lambda self, sx, *a: calls.append(1) or original(self, sx, *a))
    resumed = evaluator.evaluate(method, episodes, progress=False, saver=again, **kwargs)
    if original:
        assert len(calls) == EPISODES - stopped_at
    assert resumed["accuracy"]["per_episode"] == whole["accuracy"]["per_episode"]
    assert resumed["accuracy"]["by_step"] == whole["accuracy"]["by_step"]
    assert [len(resumed["adaptation"]["ms_by_step"]), resumed["evaluation"]["batched_episodes"]] == [
        len(whole["adaptation"]["ms_by_step"]), whole["evaluation"]["batched_episodes"]]
    assert resumed["evaluation"]["seconds"] > again.resumed.seconds > 0
    assert again.notes(EPISODES, 1.0)[0].startswith(f"evaluation resumed at episode {stopped_at + 1} of {EPISODES}")


def test_an_evaluation_resumed_on_another_device_names_both(episodes, tmp_path, monkeypatch, one_thread) -> None:
    method = _method("protonet", {}, episodes)
    plan = Plan(tmp_path / "run-abc.pt", {"run": "protonet"}, 1e-9, None)
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        with pytest.raises(Stop):
            evaluator.evaluate(method, episodes, progress=False, max_values=2 * 5 * 3 * 3 * 16 * 16,
                               saver=EvaluationState(plan, episodes.sha, len(episodes), FITTED))
    one, resumed = device_name(torch.device("cpu")), dataclasses.replace(plan, resume=True)
    same = EvaluationState(resumed, episodes.sha, len(episodes), FITTED)
    assert not [n for n in same.notes(len(episodes), same.resumed.seconds + 1.0) if "more than one device" in n]
    torch.set_num_threads(2)
    try:
        two = device_name(torch.device("cpu"))
        again = EvaluationState(resumed, episodes.sha, len(episodes), FITTED)
    finally:
        torch.set_num_threads(1)
    (note,) = [n for n in again.notes(len(episodes), again.resumed.seconds + 1.0) if "more than one device" in n]
    assert note == (f"evaluation.seconds ran on more than one device: {again.resumed.seconds:.1f} s on {one}, 1.0 s on "
                    f"{two}; its seconds and the rates made from them add these parts")


@pytest.mark.parametrize("long_units", [True, False], ids=["long episodes", "short episodes"])
def test_a_signal_in_a_long_episode_stops_at_once_and_in_a_short_one_waits_for_its_end(long_units, episodes, tmp_path,
                                                                                       monkeypatch, one_thread) -> None:
    """An episode as long as an X-ray trial (minutes) is saved as soon as it ends, so SIGTERM during the next one stops
    the run at once (that episode is adapted again on --resume); after short unsaved ones, the signal waits for the
    episode in progress, which is saved with them. Either way the resumed run scores as an uninterrupted one."""
    method = _method("maml", {"meta_batch": "2"}, episodes)
    whole = evaluator.evaluate(method, episodes, progress=False, batched=False)
    monkeypatch.setattr("mtbench.run.evaluation_state.LONG_UNIT_S", 0.0 if long_units else float("inf"))
    adapt, finished = type(method).adapt, []

    def signalled(self, *args):  # SIGTERM after the first predictor of the third episode
        for step, predictor in enumerate(adapt(self, *args)):
            if len(finished) == 2 and step == 1:
                signal.raise_signal(signal.SIGTERM)
            yield predictor
        finished.append(1)

    def terminate(signum, frame):
        raise Stop

    plan = Plan(tmp_path / ".resume" / "run-abc.pt", {"run": "maml"}, 1e9, None)  # no save for the period
    before = signal.signal(signal.SIGTERM, terminate)
    try:
        with monkeypatch.context() as m, pytest.raises(Stop):
            m.setattr(type(method), "adapt", signalled)
            evaluator.evaluate(method, episodes, progress=False, batched=False,
                               saver=EvaluationState(plan, episodes.sha, len(episodes), FITTED))
    finally:
        signal.signal(signal.SIGTERM, before)
    again = EvaluationState(dataclasses.replace(plan, resume=True), episodes.sha, len(episodes), FITTED)
    assert len(finished) == again.resumed.episodes == (2 if long_units else 3)
    resumed = evaluator.evaluate(method, episodes, progress=False, batched=False, saver=again)
    assert resumed["accuracy"]["per_episode"] == whole["accuracy"]["per_episode"]


def _spec(method: str, out: Path, **extra) -> RunSpec:
    hp = {"maml": (("meta_batch", "2"),), "scratch": (("steps", "3"), ("report_steps", "0,1"))}[method]
    return RunSpec(method=method, dataset="synthetic", episodes=EpisodeSpec(5, 1, 2, 4, 0),
                   budget="4" if method == "maml" else "quick", hparams=hp, device="cpu", out=str(out), progress=False,
                   **extra)


@pytest.mark.parametrize("method", ["maml", "scratch"])
def test_a_run_that_died_in_its_evaluation_resumes_it(method, tmp_path, monkeypatch, one_thread) -> None:
    """Through ``mtbench run``: the fit is restored (scratch has none: its evaluation alone was saved), the
    saved episodes are kept, the result says so, and both states are gone once it is written."""
    monkeypatch.setitem(evaluator.CHUNK_VALUES, "cpu", 1)  # a chunk per episode: boundaries to stop at
    monkeypatch.setattr("mtbench.baselines.scratch.CPU_CHUNK_EPISODES", 1)
    whole = run(_spec(method, tmp_path / "whole"))[0]
    out = tmp_path / "results"
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        with pytest.raises(Stop):
            run(_spec(method, out, checkpoint_every=1e-9))
    assert not list(out.glob("*.json"))
    kinds = sorted("evaluation" if p.name.endswith(".evaluation.pt") else "fit" for p in (out / ".resume").iterdir())
    assert kinds == (["evaluation", "fit"] if method == "maml" else ["evaluation"])
    with pytest.raises(UserError, match="a saved (fit|evaluation) of this run is at .*add --resume"):
        run(_spec(method, out, checkpoint_every=1e-9))
    doc, path = run(_spec(method, out, checkpoint_every=1e-9, resume=True))
    assert doc["accuracy"]["per_episode"] == whole["accuracy"]["per_episode"]
    assert any(n.startswith("evaluation resumed at episode 3 of 4") for n in doc["fit"]["notes"])
    assert path.exists() and not list((out / ".resume").iterdir())


def test_a_saved_evaluation_of_another_run_or_a_damaged_one_is_refused(episodes, tmp_path) -> None:
    plan = Plan(tmp_path / "run-abc.pt", {"run": "protonet"}, 1e-9, None, resume=True)
    saver = EvaluationState(dataclasses.replace(plan, resume=False), episodes.sha, len(episodes), FITTED)
    saver.save(Progress(2, torch.ones(2, 1), [1.0], [0], 1.0))
    with pytest.raises(UserError, match=r"is the evaluation of another run \(episodes_sha .* there, b+ here\)"):
        EvaluationState(plan, "b" * 12, len(episodes), FITTED)
    with pytest.raises(UserError, match=r"is the evaluation of another run \(run protonet there, maml here\)"):
        EvaluationState(dataclasses.replace(plan, identity={"run": "maml"}), episodes.sha, len(episodes), FITTED)
    saved = tmp_path / "run-abc.evaluation.pt"
    saved.write_bytes(saved.read_bytes()[:100])
    with pytest.raises(UserError, match="is damaged .*delete .* to evaluate from the first episode"):
        EvaluationState(plan, episodes.sha, len(episodes), FITTED)


def test_a_saved_evaluation_of_a_fit_of_other_length_is_refused(episodes, tmp_path) -> None:
    """The iterations the evaluated fit ran are part of a saved evaluation's identity, which the plan's (its
    budget's) does not hold: a partial fit continued is another model."""
    plan = Plan(tmp_path / "run-abc.pt", {"run": "maml"}, 1e-9, None, resume=True)
    EvaluationState(dataclasses.replace(plan, resume=False), episodes.sha, len(episodes), 434).save(
        Progress(2, torch.ones(2, 1), [1.0], [0], 1.0))
    with pytest.raises(UserError, match=r"is the evaluation of another run \(fitted 434 there, 600 here\)"):
        EvaluationState(plan, episodes.sha, len(episodes), 600)
    assert EvaluationState(plan, episodes.sha, len(episodes), 434).resumed.episodes == 2


def test_sigterm_during_the_evaluation_stops_it_and_the_resumed_run_scores_as_an_uninterrupted_one(tmp_path) -> None:
    """Through the CLI: SIGTERM in the evaluation stops it, with the scored episodes saved beside the fit where there
    are any (those of a chunk in progress are not: the signal waits for it only while earlier ones are unsaved), names
    the files and the command that resumes them; that command scores every episode as a run that was never stopped
    does (40 synthetic episodes: 5 chunks of 8 on the CPU)."""
    env = {**os.environ, "MTBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def cli(out: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "mtbench.cli", "run", "--method", "maml", "--dataset", "synthetic", "--ways",
                "5", "--shots", "1", "--queries", "2", "--episodes", "40", "--device", "cpu", "--hp", "meta_batch=2",
                "--budget", "4", "--out", str(out), *args]

    whole = subprocess.run(cli(tmp_path / "whole", "--no-progress"), capture_output=True, text=True, env=env,
                           timeout=600, check=False)
    assert whole.returncode == 0, whole.stderr[-2000:]
    out, err = tmp_path / "results", tmp_path / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen(cli(out, "--checkpoint-every", "60"), stdout=subprocess.DEVNULL, stderr=f, env=env,
                                cwd=tmp_path)
    end = time.monotonic() + 300
    while "evaluating maml:" not in err.read_text():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the evaluation did not start (rc {proc.poll()}): {err.read_text()[-2000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143
    lines = err.read_text().replace("\r", "\n").strip().splitlines()
    (fit,) = (out / ".resume").glob("*[0-9a-f].pt")
    evaluations = (out / ".resume").glob("*.evaluation.pt")
    written = [f"a fit state at {fit}"] + [f"an evaluation state at {e}" for e in evaluations]
    assert lines[-2] == f"mtbench: interrupted by SIGTERM; it had written {' and '.join(written)}, nothing else"
    command = shlex.split(lines[-1].removeprefix("mtbench: resume with: "))
    assert command[-1] == "--resume" and not list(out.glob("*.json"))
    done = subprocess.run([sys.executable, "-m", "mtbench.cli", *command[1:], "--no-progress"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = out.glob("*.json")
    (reference,) = (tmp_path / "whole").glob("*.json")
    doc = json.loads(result.read_text())
    assert doc["accuracy"]["per_episode"] == json.loads(reference.read_text())["accuracy"]["per_episode"]
    # the note says where the evaluation resumed exactly when its state was written
    assert any(n.startswith("evaluation resumed at episode ") for n in doc["fit"]["notes"]) == (len(written) == 2)
    assert not list((out / ".resume").iterdir())


def test_official_saves_its_rows_with_checkpoint_every_and_a_rerun_continues_them(tmp_path, monkeypatch,
                                                                                  one_thread) -> None:
    """``mtbench official ... -- --checkpoint-every MINUTES``: a row stopped in its evaluation leaves its fit and
    its scored episodes in the sweep's storage, and the same command continues the row from them, to the
    per-episode accuracies of a row never stopped; ``--resume`` after ``--`` is refused (the rerun resumes)."""
    from click.testing import CliRunner

    from mtbench.cli import main

    monkeypatch.setitem(evaluator.CHUNK_VALUES, "cpu", 1)  # a chunk per episode: boundaries to stop at
    plan = tmp_path / "plan.toml"
    plan.write_text('budget = "4"\n[[settings]]\ndataset = "synthetic"\nepisodes = 4\n'
                    'entries = [{method = "maml", hp = {meta_batch = "2"}}]\n')

    def official(leaderboards: str, *run_options: str):
        return CliRunner().invoke(main, ["official", "--plan", str(plan), "--leaderboards", str(tmp_path / leaderboards),
                                         "--engine", "local", "--storage", str(tmp_path / "storage"), "--",
                                         "--device", "cpu", "--no-progress", *run_options])

    whole = official("whole")
    assert whole.exit_code == 0, whole.output
    (reference,) = (tmp_path / "whole").rglob("*.json")
    refused = official("saved", "--resume")
    assert refused.exit_code == 2 and "--resume after --: mtbench official runs whole rows" in refused.output
    original = EvaluationState.save

    def save(self, p: Progress) -> None:
        original(self, p)
        if p.episodes >= 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(EvaluationState, "save", save)
        stopped = official("saved", "--checkpoint-every", "0.00001")
    assert stopped.exit_code != 0 and not list((tmp_path / "saved").rglob("*.json"))
    states = sorted(p.name.split(".", 1)[1] for p in (tmp_path / "storage" / "states").rglob("*.pt"))
    assert states == ["evaluation.pt", "pt"]
    again = official("saved", "--checkpoint-every", "0.00001")
    assert again.exit_code == 0, again.output
    (result,) = (tmp_path / "saved").rglob("*.json")
    doc = json.loads(result.read_text())
    assert doc["accuracy"]["per_episode"] == json.loads(reference.read_text())["accuracy"]["per_episode"]
    notes = doc["fit"]["notes"]
    assert any(n.startswith("resumed from a saved fit") for n in notes), notes
    assert any(n.startswith("evaluation resumed at episode 3 of 4") for n in notes), notes
    assert not list((tmp_path / "storage" / "states").rglob("*.pt"))
