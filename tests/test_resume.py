"""Resumable fits (``mtbench run --checkpoint-every MINUTES`` / ``--resume``): a fit interrupted at any iteration
and resumed ends in exactly the state of an uninterrupted one (every method's fit loop), a SIGKILLed run resumed
scores every episode identically, Ctrl-C / SIGTERM saves the state and prints the command that resumes it, and
bad input is one line that names what differs, with nothing overwritten."""

from __future__ import annotations

import dataclasses
import json
import os
import random
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
from mtbench.data.episodes import EpisodeSpec
from mtbench.methods import METHODS, FitContext, make_hparams
from mtbench.run import resume
from mtbench.run.runner import RunSpec, run

CPU = torch.device("cpu")
SPEC = EpisodeSpec(ways=5, shots=1, queries=2, episodes=4, seed=0)


class Stop(Exception):
    """Stands for the process dying in the middle of an iteration."""


@pytest.fixture(scope="module")
def splits():
    data = DATASETS.get("synthetic")()
    return data.load("train"), data.load("val").without_labels()


def _fit(name: str, hp: dict[str, str], iterations: int, splits, path: Path | None, stop_at: int | None = None,
         saved: dict | None = None, unlabelled: bool = False):
    """Fit ``name`` with its state saved at every iteration boundary to ``path`` (``None``: a plain fit);
    ``stop_at``: die in the ``stop_at``-th iteration (counting every loop's); ``saved``: resume from it. The
    method and its context after the fit."""
    source, target = splits
    cls = METHODS.get(name)
    g = torch.Generator().manual_seed(3)
    method = cls(make_hparams(cls, "synthetic", hp), source.image_shape, g, CPU)
    ctx = FitContext(source, SPEC, iterations, g, CPU, progress=False, unlabelled=target if unlabelled else None)
    plan = resume.Plan(path, {"run": name}, 1e-9, saved) if path else None
    state = resume.FitState(plan, method, ctx, time.perf_counter) if plan else None
    if stop_at is not None:
        done = [0]

        def count(tasks: int, images: int) -> None:  # the iteration's work is done, its end not reached
            done[0] += 1
            if done[0] == stop_at:
                raise Stop
            FitContext.count(ctx, tasks, images)

        ctx.count = count  # type: ignore[method-assign]
        with pytest.raises(Stop):
            method.fit(ctx)
        return method, ctx
    method.fit(ctx)
    if state is not None:
        state.finish()
    return method, ctx


FITS = [  # every fit loop that saves its state: (method, hparams, iterations, unlabelled target images)
    ("protonet", {"train_ways": "5"}, 4, False),
    ("protonet", {"train_ways": "5", "pretrain_steps": "3", "pretrain_batch": "8"}, 3, False),  # two loops
    ("maml", {"meta_batch": "2"}, 3, False),
    ("maml", {"meta_batch": "2", "first_order": "true", "task_batching": "vmap"}, 3, False),
    ("reptile", {"meta_batch": "2", "inner_steps": "2"}, 3, False),
    ("matchingnet", {}, 4, False),
    ("finetune", {"batch_size": "8"}, 4, False),
    ("feature-extract", {"batch_size": "8"}, 4, False),
    ("dann", {"batch_size": "8", "domain_hidden": "16"}, 4, True),
    ("source-only", {"batch_size": "8", "domain_hidden": "16"}, 4, False),
]


@pytest.mark.parametrize("name,hp,iterations,unlabelled", FITS,
                         ids=[f"{f[0]}{'-pretrained' if 'pretrain_steps' in f[1] else ''}"
                              f"{'-fo' if 'first_order' in f[1] else ''}" for f in FITS])
def test_an_interrupted_fit_resumed_ends_exactly_as_an_uninterrupted_one(name, hp, iterations, unlabelled, splits,
                                                                         tmp_path, one_thread) -> None:
    whole, whole_ctx = _fit(name, hp, iterations, splits, None, unlabelled=unlabelled)
    loops = iterations + int(hp.get("pretrain_steps", 0))
    stop_at = random.Random(name + str(hp)).randint(2, loops)  # a later iteration than the first
    path = tmp_path / "state.pt"
    _fit(name, hp, iterations, splits, path, stop_at=stop_at, unlabelled=unlabelled)
    saved = resume.read_state(path)
    assert (saved["stage"], saved["iteration"]) != (0, 0) and saved["tasks"] > 0
    resumed, ctx = _fit(name, hp, iterations, splits, path, saved=saved, unlabelled=unlabelled)
    for key, module in whole.modules().items():
        theirs = resumed.modules()[key].state_dict()
        for k, v in module.state_dict().items():
            assert torch.equal(v, theirs[k]), f"{name}: {key}.{k} differs after resuming"
    assert (ctx.tasks, ctx.images) == (whole_ctx.tasks, whole_ctx.images)
    assert torch.equal(ctx.generator.get_state(), whole_ctx.generator.get_state())
    assert any("resumed from a saved fit" in n for n in ctx.notes)


def test_a_saved_fit_holds_the_optimiser_and_the_loop_reached(splits, tmp_path, one_thread) -> None:
    path = tmp_path / "state.pt"
    _fit("protonet", {"train_ways": "5", "pretrain_steps": "2", "pretrain_batch": "8"}, 3, splits, path, stop_at=4)
    saved = resume.read_state(path)
    # died in the 4th iteration: the 2 pre-training ones and the 1st episode were done, the 2nd was not
    assert (saved["stage"], saved["iteration"]) == (1, 1)
    assert [t["kind"] for t in saved["tracked"]] == ["Sequential", "Adam", "Adam"]
    assert saved["tracked"][2]["state"]["state"][0]["step"] == 1  # the episode Adam's moments, one step in
    assert saved["modules"].keys() == {"backbone"} and saved["seconds"] > 0


def test_a_fit_resumed_on_another_device_says_how_long_each_part_ran_there(splits, tmp_path, one_thread) -> None:
    """Each saved state records the devices of the fit so far; a fit resumed elsewhere (here: with another
    number of threads, which the device name holds) names every part in its notes; one resumed where it ran, none."""
    hp, one = {"train_ways": "5"}, device_name(CPU)
    path = tmp_path / "state.pt"
    _fit("protonet", hp, 4, splits, path, stop_at=3)
    saved = resume.read_state(path)
    assert [name for name, _ in saved["devices"]] == [one] and saved["devices"][0][1] > 0
    _, same = _fit("protonet", hp, 4, splits, path, saved=saved)
    assert not [n for n in same.notes if "more than one device" in n]
    torch.set_num_threads(2)
    try:
        two = device_name(CPU)
        _, ctx = _fit("protonet", hp, 4, splits, path, saved=saved)
    finally:
        torch.set_num_threads(1)
    (note,) = [n for n in ctx.notes if "more than one device" in n]
    before = saved["devices"][0][1]
    assert note.startswith(f"fit.seconds ran on more than one device: {before:.1f} s on {one}, ")
    assert f"s on {two};" in note


# -- whole runs -----------------------------------------------------------------------------------
ARGS = {"protonet": ["--hp", "train_ways=5", "--budget", "12"], "maml": ["--hp", "meta_batch=2", "--budget", "8"]}


def _spec(method: str, out: Path, **extra) -> RunSpec:
    hp = tuple(tuple(a.split("=")) for a in ARGS[method][1::2] if "=" in a)
    return RunSpec(method=method, dataset="synthetic", episodes=EpisodeSpec(5, 1, 2, 4, 0), budget=ARGS[method][-1],
                   hparams=hp, device="cpu", out=str(out), progress=False, **extra)


def _cli(out: Path, method: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "mtbench.cli", "run", "--method", method, "--dataset", "synthetic", "--ways", "5",
            "--shots", "1", "--queries", "2", "--episodes", "4", "--device", "cpu", "--out", str(out),
            *ARGS[method], *args]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MTBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def _saved_iteration(path: Path) -> int:
    try:
        return int(resume.read_state(path)["iteration"]) if path.exists() else -1
    except UserError:
        return -1


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted runs, one per method, computed once."""
    done = {}

    def get(method: str) -> dict:
        if method not in done:
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                done[method] = run(_spec(method, tmp_path_factory.mktemp(method)))[0]
            finally:
                torch.set_num_threads(before)
        return done[method]

    return get


@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_a_sigkilled_run_resumed_scores_every_episode_as_an_uninterrupted_one(method, tmp_path, reference) -> None:
    out = tmp_path / "results"
    cmd = _cli(out, method, "--checkpoint-every", "0.00001", "--no-progress")
    target = random.Random(method).randint(2, 5)  # kill at a random iteration after a state is saved
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(tmp_path)) as proc:
        state = _wait_for_state(out, proc)
        end = time.monotonic() + 300
        while _saved_iteration(state) < target and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
        proc.kill()
        assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not list(out.glob("*.json")) and 0 < _saved_iteration(state) < int(ARGS[method][-1])
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=_env(tmp_path), timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = out.glob("*.json")
    doc = json.loads(result.read_text())
    ref = reference(method)
    assert doc["accuracy"]["per_episode"] == ref["accuracy"]["per_episode"]
    assert [doc["fit"][k] for k in ("iterations", "tasks", "images")] == [ref["fit"][k] for k in ("iterations",
                                                                                                   "tasks", "images")]
    assert any("resumed from a saved fit" in n for n in doc["fit"]["notes"])
    assert not state.exists()  # the result is written: the saved fit is gone


def _wait_for_state(out: Path, proc: subprocess.Popen) -> Path:
    end = time.monotonic() + 300
    while True:
        found = [p for p in (out / ".resume").glob("*.pt") if _saved_iteration(p) >= 0]
        if found:
            return found[0]
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"no fit state was saved (rc {proc.poll()}): {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)


def test_sigterm_during_the_fit_saves_it_and_prints_the_command_that_resumes_it(tmp_path, reference) -> None:
    out = tmp_path / "results"
    err = tmp_path / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen(_cli(out, "protonet", "--checkpoint-every", "60"), stdout=subprocess.DEVNULL,
                                stderr=f, env=_env(tmp_path), cwd=tmp_path)
    end = time.monotonic() + 300
    while "protonet 5-way training:" not in err.read_text():  # inside the loop: a signal waits for the iteration's end
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the fit did not start (rc {proc.poll()}): {err.read_text()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    lines = err.read_text().replace("\r", "\n").strip().splitlines()
    (state,) = (out / ".resume").glob("*.pt")
    assert lines[-2] == f"mtbench: interrupted by SIGTERM; it had written a fit state at {state}, nothing else"
    assert lines[-1].startswith("mtbench: resume with: mtbench run --method protonet ")
    command = shlex.split(lines[-1].removeprefix("mtbench: resume with: "))
    assert command[-1] == "--resume" and command.count("--resume") == 1
    assert 0 <= _saved_iteration(state) < 12 and not list(tmp_path.rglob("*.tmp"))  # 0: it came before the 1st
    done = subprocess.run([sys.executable, "-m", "mtbench.cli", *command[1:], "--no-progress"], capture_output=True,
                          text=True, env=_env(tmp_path), cwd=tmp_path, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = out.glob("*.json")
    assert json.loads(result.read_text())["accuracy"]["per_episode"] == reference("protonet")["accuracy"]["per_episode"]


# -- bad input ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A protonet run that died in its 3rd iteration: its out folder, spec and state file."""
    out = tmp_path_factory.mktemp("saved")
    spec = _spec("protonet", out, checkpoint_every=1e-9)
    calls = [0]
    original = FitContext.count

    def count(self, tasks, images):
        calls[0] += 1
        if calls[0] == 3:
            raise Stop
        original(self, tasks, images)

    FitContext.count = count
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(Stop):
            run(spec)
    finally:
        FitContext.count = original
        torch.set_num_threads(before)
    (state,) = (out / ".resume").glob("*.pt")
    return out, spec, state


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(spec: RunSpec, folder: Path, *words: str) -> str:
    before = _files(folder)
    with pytest.raises(UserError) as err:
        run(spec)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert _files(folder) == before  # nothing written, nothing overwritten
    return message


def test_resume_without_a_saved_fit_is_refused(tmp_path) -> None:
    tmp_path.joinpath("results").mkdir()
    _refused(_spec("protonet", tmp_path / "results", resume=True), tmp_path,
             "no saved fit in", "--checkpoint-every MINUTES", "drop --resume")


@pytest.mark.parametrize("change,words", [
    ({"method": "maml"}, ["method.name protonet there, maml here"]),
    ({"hparams": (("train_ways", "6"),)}, ["method.hparams.train_ways 5 there, 6 here"]),
    ({"episodes": EpisodeSpec(5, 2, 2, 4, 0)}, ["protocol.shots 1 there, 2 here"]),
    ({"budget": "13"}, ["budget.name 12 there, 13 here"]),
], ids=["method", "hparams", "protocol", "budget"])
def test_resume_of_another_run_names_what_differs(change, words, saved_run) -> None:
    out, spec, _ = saved_run
    spec = dataclasses.replace(spec, resume=True, **change)
    if change.get("method") == "maml":
        spec = dataclasses.replace(spec, hparams=())
    _refused(spec, out, "no saved fit of this run", *words)


@pytest.mark.parametrize("field,value,words", [
    ("code", {"mtbench": "0.0.1", "method_source": "0" * 64}, ["code.mtbench 0.0.1 there", "code.method_source 0000"]),
    ("dataset", {"name": "omniglot", "version": "1"}, ["dataset.name omniglot there, synthetic here"]),
], ids=["code-version", "dataset"])
def test_a_saved_fit_of_other_code_or_data_at_this_runs_path_is_refused(field, value, words, saved_run,
                                                                         tmp_path) -> None:
    _, spec, state = saved_run
    blob = torch.load(state, weights_only=True)
    blob["identity"] = {**blob["identity"], field: value}
    copy = tmp_path / "results"
    (copy / ".resume").mkdir(parents=True)
    torch.save(blob, copy / ".resume" / state.name)
    _refused(dataclasses.replace(spec, out=str(copy), resume=True), copy, "is the fit of another run", *words)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other"])
def test_a_damaged_saved_fit_is_refused(damage, saved_run, tmp_path) -> None:
    _, spec, state = saved_run
    copy = tmp_path / "results"
    (copy / ".resume").mkdir(parents=True)
    data = state.read_bytes()
    target = copy / ".resume" / state.name
    if damage == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        target.write_bytes(os.urandom(1000))
    else:
        torch.save({"weights": torch.zeros(2)}, target)
    words = ["is not a fit state"] if damage == "other" else ["is damaged"]
    _refused(dataclasses.replace(spec, out=str(copy), resume=True), copy, str(target), *words, "start over")


def test_a_new_run_never_overwrites_a_saved_fit_and_the_period_is_checked(saved_run) -> None:
    out, spec, _ = saved_run
    _refused(spec, out, "a saved fit of this run is at", "add --resume")
    for bad in (0, -1, float("nan"), float("inf")):
        _refused(dataclasses.replace(spec, checkpoint_every=bad), out, "--checkpoint-every must be", str(bad))
    with pytest.raises(UserError, match="give --out a folder"):
        run(dataclasses.replace(spec, out=None))
