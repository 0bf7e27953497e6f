"""``mtbench sweep`` on Ray for real (no mocks): a local instance of 2 CPUs, 1 CPU per trial. Trials run two at a
time; a sweep whose driver is killed after its first results resumes and ends with every trial exactly once;
a trial on Ray writes the per-episode accuracies `mtbench run` writes for the same spec.

All Ray tests live in this one file, so that under xdist's ``--dist loadfile`` one worker runs them against one
Ray instance (module-scoped, started in a short temp dir: Ray's unix sockets have a path length limit, and shut
down at the end). Skipped when Ray is not installed (``pip install 'mtbench[ray]'``; CI installs it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")

from mtbench.board.engines import RayEngine, run_trials  # noqa: E402
from mtbench.board.sweep import grid  # noqa: E402
from mtbench.cli import main  # noqa: E402
from mtbench.results import read_result  # noqa: E402
from mtbench.results.layout import leaderboard_files  # noqa: E402

TINY = {"ways": "3", "shots": "1", "queries": "1", "episodes": "2"}
CLI_TINY = ["--dataset", "synthetic", "--ways", "3", "--queries", "1", "--episodes", "2", "--device", "cpu",
            "--no-progress"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance of 2 CPUs; its address, for drivers in other processes."""
    temp = tempfile.mkdtemp(prefix="mtr", dir="/tmp")
    ray.init(num_cpus=2, _temp_dir=temp, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def test_trials_run_two_at_a_time(cluster, tmp_path):
    trials = grid("protonet", "synthetic", out=tmp_path / "lb", seeds="0,1,2,3,4,5", budgets="2",
                  overrides={"device": "cpu"}, **TINY)
    assert len(trials) == 6
    engine = RayEngine(cpus_per_trial=1)
    assert engine.slots == 2
    report = run_trials(trials, engine, tmp_path / "storage", progress=False, echo=lambda s: None)
    assert [o.status for o in report.outcomes] == ["done"] * 6
    assert len(leaderboard_files(tmp_path / "lb")) == 6
    spans = [(o.record["start"], o.record["end"]) for o in report.outcomes]
    # the most trials running at one instant: at a trial's start, those started before it and not yet ended
    most = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert most == 2, spans
    assert {o.record["pid"] for o in report.outcomes} != {os.getpid()}  # in Ray's workers, not here


def test_a_killed_sweep_resumes_and_runs_every_trial_once(cluster, tmp_path):
    lb, storage = tmp_path / "lb", tmp_path / "storage"
    args = ["sweep", "--method", "protonet,matchingnet", "--seed", "0,1,2", "--budget", "2", *CLI_TINY,
            "--engine", "ray", "--address", cluster, "--out", str(lb), "--storage", str(storage)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "mtbench", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300  # the first trial's result; a loaded machine starts Ray slowly
    while not leaderboard_files(lb) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)  # no chance to clean up: its claims are left behind
    out, _ = driver.communicate(timeout=30)
    written = len(leaderboard_files(lb))
    assert 1 <= written < 6, out
    resumed = CliRunner().invoke(main, args)  # this process's Ray instance, as the --address one
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.count("result exists") >= written
    docs = [read_result(p) for p in leaderboard_files(lb)]
    assert sorted((d["method"]["name"], d["protocol"]["seed"]) for d in docs) == sorted(
        (m, s) for m in ("protonet", "matchingnet") for s in range(3))
    assert not [p for p in lb.rglob(".*") if p.is_file()]  # no claim or temp file left
    check = CliRunner().invoke(main, ["validate", "--no-shas", str(lb)])
    assert check.exit_code == 0, check.output


def test_a_ray_trial_equals_mtbench_run(cluster, tmp_path, one_thread):
    spec = ["--method", "maml", *CLI_TINY, "--budget", "3", "--hp", "meta_batch=2"]
    swept = CliRunner().invoke(main, ["sweep", *spec, "--engine", "ray", "--out", str(tmp_path / "lb"),
                                      "--storage", str(tmp_path / "storage")])
    assert swept.exit_code == 0, swept.output
    ran = CliRunner().invoke(main, ["run", *spec, "--out", str(tmp_path / "run")])
    assert ran.exit_code == 0, ran.output
    (a,), (b,) = leaderboard_files(tmp_path / "lb"), list((tmp_path / "run").glob("*.json"))
    a, b = read_result(a), read_result(b)
    assert a["accuracy"]["per_episode"] == b["accuracy"]["per_episode"]
    assert a["accuracy"]["by_step"] == b["accuracy"]["by_step"]
    for doc in (a, b):
        for key in ("provenance", "fit", "evaluation", "adaptation"):
            doc.pop(key)
    assert a == b  # all but timings and provenance
