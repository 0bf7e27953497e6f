"""``mtbench sweep`` on the local engine: grids from options and from sweep files, every bad value reported at
once, skipping what exists, resuming after an interruption, the dry run, failures, and two sweeps sharing a
folder (each trial once, through the claims). Every run is a tiny one on the generated ``synthetic`` data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from mtbench.board import claims, engines
from mtbench.board.engines import LocalEngine, run_trials
from mtbench.board.sweep import existing, from_file, grid
from mtbench.cli import main
from mtbench.core.errors import UserError
from mtbench.data.episodes import EpisodeSpec
from mtbench.methods import METHODS
from mtbench.results import read_result
from mtbench.results.layout import leaderboard_files

TINY = {"ways": "3", "shots": "1", "queries": "1", "episodes": "2", "budgets": "2"}
CLI_TINY = ["--dataset", "synthetic", "--ways", "3", "--queries", "1", "--episodes", "2", "--budget", "2",
            "--engine", "local", "--no-progress", "--device", "cpu"]


def sweep(tmp_path: Path, *args: str) -> object:
    return CliRunner().invoke(main, ["sweep", *args, "--out", str(tmp_path / "lb"), "--storage",
                                     str(tmp_path / "storage")])


def files(tmp_path: Path) -> list[Path]:
    return leaderboard_files(tmp_path / "lb")


def test_a_grid_of_option_values(tmp_path):
    trials = grid("protonet,maml", "synthetic", out=tmp_path, ways="2,3", seeds="0,1", budgets="2",
                  queries="1", episodes="2", hparams=["first_order=true,false"])
    # first_order belongs to maml only: protonet once per (ways, seed), maml twice
    assert len(trials) == 2 * 2 * 3
    summaries = [t.summary for t in trials]
    assert summaries[:3] == ["protonet synthetic/2w1s seed 0 budget 2", "maml synthetic/2w1s seed 0 budget 2 hp "
                             "first_order=true", "maml synthetic/2w1s seed 0 budget 2 hp first_order=false"]
    t = trials[-1]
    assert t.spec.episodes == EpisodeSpec(ways=3, shots=1, queries=1, episodes=2, seed=1)
    assert t.folder == tmp_path / "synthetic" / "3w1s"
    assert t.spec.command == (f"mtbench run --method maml --hp first_order=false --dataset synthetic --ways 3 "
                              f"--shots 1 --queries 1 --episodes 2 --seed 1 --budget 2 --out {t.folder}")
    assert len({t.key for t in trials}) == len(trials)
    # the same trial asked for twice (an explicit default) runs once
    assert len(grid("protonet", "synthetic", out=tmp_path, shots="1,1", **{k: v for k, v in TINY.items()
                                                                          if k != "shots"})) == 1


def test_a_sweep_file_is_the_official_plans_format(tmp_path):
    plan = tmp_path / "sweep.toml"
    plan.write_text(textwrap.dedent("""
        budget = "2"
        [groups]
        two = [{method = "protonet"}, {method = "maml", hp = {first_order = true}}]
        [[settings]]
        dataset = "synthetic"
        ways = 3
        queries = 1
        episodes = 2
        entries = "two"
        [[settings]]
        dataset = "synthetic"
        ways = 2
        queries = 1
        episodes = 2
        seed = 4
        entries = [{method = "protonet"}]
    """))
    trials = from_file(plan, tmp_path / "lb", {"device": "cpu"}, ["--device", "cpu"])
    assert [t.summary for t in trials] == ["protonet synthetic/3w1s seed 0 budget 2",
                                           "maml synthetic/3w1s seed 0 budget 2 hp first_order=true",
                                           "protonet synthetic/2w1s seed 4 budget 2"]
    assert trials[2].spec.device == "cpu" and trials[2].spec.command.endswith("--budget 2 --out "
                                                                                f"{trials[2].folder} --device cpu")


def test_every_bad_value_is_reported_at_once_before_anything_runs(tmp_path):
    result = sweep(tmp_path, "--method", "protonte,maml", "--dataset", "synthetic,nope", "--ways", "3,x,1",
                   "--budget", "2,fast", "--hp", "nope=1", "--hp", "meta_batch=two", "--engine", "local")
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("mtbench: error: ") and "problem(s) in the sweep, nothing ran:" in lines[0]
    problems = [line.strip() for line in lines[1:]]
    expected = ["--method protonte: unknown method 'protonte': did you mean 'protonet'",  # other tests may add names
                "--dataset nope: unknown dataset 'nope'",
                "--ways x: not a whole number ≥ 0; give whole numbers, e.g. --ways 5,20",
                "--hp nope: no method of the grid (maml) has an hparam 'nope'",
                "--ways must be at least 2 for a classification episode, got 1",
                "--budget must be one of",
                "--hp meta_batch: maml's meta_batch"]
    for want in expected[:-1]:
        assert sum(want in p for p in problems) >= 1, (want, problems)
    assert any("meta_batch" in p and "two" in p for p in problems), problems
    assert not (tmp_path / "lb").exists()


@pytest.mark.parametrize("text, line, says", [
    ('budget = "2"\n\n[[settings]]\ndataset = "synthetic"\nwyas = 3\nentries = [{method = "protonet"}]\n', 5,
     "unknown key(s) wyas"),
    ('budget = "2"\n[[settings]]\ndataset = "synthetic"\nentries = [{method = "protonet"}]\n[[settings]]\n'
     'dataset = "synthetic"\nways = "five"\nentries = [{method = "protonet"}]\n', 7, "--ways must be a whole number"),
    ('budget = "2"\nsettings = []\n', 2, "the sweep is empty"),
    ('budget = "2"\n[[settings]]\ndataset = "synthetic"\nentries = []\n', 4, "non-empty list of entries"),
    ('budget = "2"\nsurprise = 1\n[[settings]]\ndataset = "synthetic"\nentries = [{method = "protonet"}]\n', 2,
     "unknown key(s) surprise"),
    ('budget = "2"\n[[settings]]\ndataset = "synthetic"\nways = 3 3\n', 4, "not valid TOML"),
])
def test_a_bad_sweep_file_is_rejected_with_its_line(tmp_path, text, line, says):
    plan = tmp_path / "sweep.toml"
    plan.write_text(text)
    result = sweep(tmp_path, str(plan), "--engine", "local")
    assert result.exit_code == 2 and says in result.output, result.output
    assert f"line {line}" in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_sweep_file_and_grid_options_do_not_mix(tmp_path):
    plan = tmp_path / "sweep.toml"
    plan.write_text('budget = "2"\n[[settings]]\ndataset = "synthetic"\nentries = [{method = "protonet"}]\n')
    result = sweep(tmp_path, str(plan), "--method", "maml", "--seed", "1")
    assert result.exit_code == 2 and "--method, --seed with a sweep file" in result.output
    assert sweep(tmp_path).exit_code == 2


def test_runs_skips_what_exists_and_dry_run_estimates(tmp_path, one_thread):
    first = sweep(tmp_path, "--method", "protonet,matchingnet", *CLI_TINY)
    assert first.exit_code == 0, first.output
    assert "[1/2] start  protonet synthetic/3w1s seed 0 budget 2 (local)" in first.output
    assert "[2/2] done   matchingnet synthetic/3w1s seed 0 budget 2: node " in first.output
    table = first.output.splitlines()[-2:]
    assert table[0].split() == ["trials", "done", "skipped", "failed", "wall", "rows/hour"]
    assert table[1].split()[:4] == ["2", "2", "0", "0"] and float(table[1].split()[-1]) > 0
    assert len(files(tmp_path)) == 2
    for path in files(tmp_path):
        doc = read_result(path)
        assert doc["provenance"]["command"].startswith(f"mtbench run --method {doc['method']['name']} --dataset")
    again = sweep(tmp_path, "--method", "protonet,matchingnet", *CLI_TINY)
    assert again.exit_code == 0 and again.output.count("result exists") == 2 and len(files(tmp_path)) == 2
    dry = sweep(tmp_path, "--method", "protonet,maml", "--seed", "0,1", *CLI_TINY, "--dry-run")
    assert dry.exit_code == 0, dry.output
    out = dry.output
    assert "[1/4] protonet synthetic/3w1s seed 0 budget 2: skip, result exists" in out
    assert "[2/4] maml synthetic/3w1s seed 0 budget 2: run, expected cost unknown" in out
    expected = read_result(next(p for p in files(tmp_path) if "protonet" in p.name))
    seconds = expected["fit"]["seconds"] + expected["evaluation"]["seconds"]
    assert f"[3/4] protonet synthetic/3w1s seed 1 budget 2: run, expected {seconds:.1f} s (as " in out
    assert "3 of 4 trial(s) to run" in out and "plus 2 of unknown cost" in out
    assert len(files(tmp_path)) == 2  # the dry run ran nothing


def test_an_interrupted_sweep_resumes_with_what_is_missing(tmp_path, one_thread, monkeypatch):
    trials = grid("protonet", "synthetic", out=tmp_path / "lb", seeds="0,1,2", overrides={"device": "cpu"},
                  **TINY)
    real, calls = engines.execute, []

    def interrupted(spec, threads, malloc):
        calls.append(spec.episodes.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second trial
        return real(spec, threads, malloc)

    monkeypatch.setattr(engines, "execute", interrupted)
    report = run_trials(trials, LocalEngine(), tmp_path / "storage", progress=False, echo=lambda s: None)
    assert report.interrupted and [o.status for o in report.outcomes] == ["done"]
    assert len(files(tmp_path)) == 1 and not list((tmp_path / "lb").rglob(".*"))  # no claim, no partial file
    assert "interrupted: run the same command again" in report.table()
    monkeypatch.setattr(engines, "execute", real)
    report = run_trials(trials, LocalEngine(), tmp_path / "storage", progress=False, echo=lambda s: None)
    assert [o.status for o in report.outcomes] == ["exists", "done", "done"]
    seeds = sorted(read_result(p)["protocol"]["seed"] for p in files(tmp_path))
    assert seeds == [0, 1, 2]


def test_a_failed_trial_is_reported_the_sweep_goes_on_and_retry_failed_reruns_it(tmp_path, one_thread,
                                                                                 monkeypatch):
    from mtbench.run import runner

    real = runner.run

    def flaky(spec):
        if spec.method == "matchingnet":
            raise RuntimeError("CUDA out of memory\nmore detail")
        return real(spec)

    monkeypatch.setattr(runner, "run", flaky)
    args = ["--method", "matchingnet,protonet", *CLI_TINY]
    result = sweep(tmp_path, *args)
    assert result.exit_code == 1
    assert "[1/2] FAILED matchingnet synthetic/3w1s seed 0 budget 2: node " in result.output
    assert result.output.splitlines()[2].endswith(": RuntimeError: CUDA out of memory")
    assert "[2/2] done   protonet" in result.output and "1 trial(s) failed" in result.output
    assert len(files(tmp_path)) == 1
    record = json.loads(next((tmp_path / "storage" / "failures").glob("*.json")).read_text())
    assert record["error"] == "RuntimeError: CUDA out of memory" and record["trial"]["method"] == "matchingnet"
    monkeypatch.setattr(runner, "run", real)
    again = sweep(tmp_path, *args)
    assert again.exit_code == 1 and "failed in an earlier sweep (RuntimeError: CUDA out of memory)" in again.output
    assert "did not run again: add --retry-failed" in again.output and len(files(tmp_path)) == 1
    retried = sweep(tmp_path, *args, "--retry-failed")
    assert retried.exit_code == 0 and "[1/2] done   matchingnet" in retried.output
    assert len(files(tmp_path)) == 2 and not list((tmp_path / "storage" / "failures").glob("*.json"))


def test_two_sweeps_into_one_folder_run_each_trial_once(tmp_path, one_thread):
    trials = grid("protonet,matchingnet", "synthetic", out=tmp_path / "lb", seeds="0,1,2",
                  overrides={"device": "cpu"}, **TINY)
    barrier, reports = threading.Barrier(2), []

    def one_sweep():
        barrier.wait()  # both released at once
        reports.append(run_trials(trials, LocalEngine(), tmp_path / "storage", progress=False, echo=lambda s: None))

    threads = [threading.Thread(target=one_sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(files(tmp_path)) == len(trials) == 6
    assert sorted(o.status for r in reports for o in r.outcomes).count("done") == 6
    assert all(existing(t) is not None for t in trials)
    assert not list((tmp_path / "lb").rglob(".*"))  # every claim released


def test_claims_exclusive_stale_and_held(tmp_path):
    held = claims.claim(tmp_path, "abc")
    assert held is not None and claims.claim(tmp_path, "abc") is None  # ours, alive
    held.release()
    assert not held.path.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / ".abc.claim"
    import socket

    stale.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    taken = claims.claim(tmp_path, "abc")  # its process is gone: taken over
    assert taken is not None and json.loads(stale.read_text())["pid"] == os.getpid()
    taken.release()
    stale.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))  # alive
    assert claims.claim(tmp_path, "abc") is None
    stale.write_text(json.dumps({"pid": 1, "host": "another-node"}))  # another host, recently touched
    assert claims.claim(tmp_path, "abc") is None
    os.utime(stale, (0, 0))  # ... not touched for long: its node is gone
    assert claims.claim(tmp_path, "abc") is not None


def test_engine_choice_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "ray_available", lambda: False)
    assert engines.default_engine() == "local"
    with pytest.raises(UserError, match="share GPUs"):
        engines.make_engine("local", gpus_per_trial=0.25)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    result = sweep(tmp_path, "--method", "protonet", "--dataset", "synthetic", "--engine", "ray", "--budget", "2")
    assert result.exit_code == 2
    assert result.output.strip() == "mtbench: error: --engine ray needs Ray: pip install 'mtbench[ray]' (or use " \
                                    "--engine local)"


def test_a_result_of_another_version_is_not_the_trials_but_predicts_its_cost(tmp_path, one_thread, monkeypatch):
    first = sweep(tmp_path, "--method", "protonet", *CLI_TINY)
    assert first.exit_code == 0, first.output
    [path] = files(tmp_path)
    trials = grid("protonet", "synthetic", out=tmp_path / "lb", overrides={"device": "cpu"}, **TINY)
    assert existing(trials[0]) == path
    monkeypatch.setattr(METHODS.get("protonet"), "version", "99")  # a later version of the method
    trials = grid("protonet", "synthetic", out=tmp_path / "lb", overrides={"device": "cpu"}, **TINY)
    assert existing(trials[0]) is None  # rerun, not skipped as done
    dry = sweep(tmp_path, "--method", "protonet", *CLI_TINY, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert ": run, expected " in dry.output and f"(as {path.name})" in dry.output
