"""``mtbench official``: the plan as data, which rows count as present, the order rows run in, runs in this
process, failures, the options after ``--`` and the dry run. Every run here is of a tiny test plan on the
generated ``synthetic`` dataset; the official plan is only read and dry-run."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from importlib import resources

import pytest
from click.testing import CliRunner

from mtbench.board.labels import label
from mtbench.board.official import cost_lines, expected_label, load_plan, missing, spec
from mtbench.cli import main
from mtbench.cli.board import official_run_options
from mtbench.cli.main import run_cmd
from mtbench.core.errors import UserError
from mtbench.data.episodes import EpisodeSpec
from mtbench.data.protocols import TransferSpec
from mtbench.results import read_result
from mtbench.results.layout import folder
from support import put_result, result_doc

EVERY_METHOD = ["protonet", "matchingnet", "feature-extract", "finetune", "maml", "maml (1st order)", "scratch",
                "reptile"]


def plan_file(tmp_path, text: str):
    path = tmp_path / "plan.toml"
    path.write_text(textwrap.dedent(text))
    return path


TINY = """
    budget = "1"

    [groups]
    tiny = [{method = "protonet"}, {method = "maml", hp = {first_order = true, meta_batch = 2}}]

    [[settings]]
    dataset = "synthetic"
    ways = 3
    shots = 1
    queries = 1
    episodes = 2
    entries = "tiny"

    [[settings]]
    dataset = "synthetic"
    ways = 2
    shots = 1
    queries = 1
    episodes = 2
    entries = "tiny"
"""


def test_the_official_plan_covers_the_official_settings_with_every_method():
    plan = load_plan()
    assert plan.budget == "quick"
    assert [(s.dataset, s.name) for s in plan.settings] == [
        ("omniglot", "5w1s"), ("omniglot", "5w5s"), ("omniglot", "20w1s"), ("miniimagenet", "5w1s"),
        ("miniimagenet", "5w5s"), ("xray", "transfer200-50"), ("omniglot-shift", "5w1s")]
    for s in plan.settings[:-1]:
        assert [e.label for e in s.entries] == EVERY_METHOD
    assert plan.settings[0].protocol == EpisodeSpec(ways=5, shots=1)
    assert plan.settings[5].protocol == TransferSpec(train_images=200, test_images=50)
    fomaml = plan.settings[0].entries[5]
    assert (fomaml.method, fomaml.hparams) == ("maml", (("first_order", "true"),))
    assert [e.label for e in plan.settings[-1].entries] == ["dann", "source-only"]
    # labels are derived, never written in the plan
    text = resources.files("mtbench.board").joinpath("official.toml").read_text()
    assert "1st order" not in text and not re.search(r"^\s*label\s*=", text, re.M)


def test_labels_are_derived_from_the_methods_variant():
    assert expected_label("maml", "omniglot", {"first_order": "true"}, "quick") == "maml (1st order)"
    assert expected_label("maml", "omniglot", {"first_order": "false"}, "quick") == "maml"
    assert expected_label("finetune", "xray", {"finetune_backbone": "true"}, "quick") == "finetune (whole network)"
    # DANN adapts only where the dataset has unlabelled target images, and only when it fits at all
    assert expected_label("dann", "omniglot-shift", {}, "quick") == "dann"
    assert expected_label("dann", "synthetic", {}, "quick") == "dann (no target images: source only)"
    assert expected_label("dann", "synthetic", {}, "0") == "dann"


def test_a_malformed_plan_is_an_error_naming_the_place(tmp_path):
    cases = [
        ('budget = "quick"\n[[settings]]\ndataset = "synthetic"\nways = 5\nentries = [{method = "protonte"}]',
         "settings[0].entries[0]: unknown method 'protonte'"),
        ('budget = "quick"\n[[settings]]\ndataset = "synthetic"\nwyas = 5\nentries = [{method = "protonet"}]',
         "settings[0]: unknown key(s) wyas"),
        ('budget = "quick"\n[[settings]]\ndataset = "synthetic"\nentries = "nope"', "no group 'nope'"),
        ('budget = "quick"\n[[settings]]\ndataset = "synthetic"\nways = 5\ntrials = 3\nentries = []',
         "--trials belongs to --protocol transfer"),
        ('budget = "quick"\n[[settings]]\ndataset = "synthetic"\nentries = [{method = "maml", hp = {nope = 1}}]',
         "nope"),
        ("budget = [", "not valid TOML"),
    ]
    for i, (text, message) in enumerate(cases):
        path = tmp_path / f"plan{i}.toml"
        path.write_text(text)
        with pytest.raises(UserError, match=re.escape(message)):
            load_plan(path)


def test_a_row_counts_once_a_quick_result_with_its_label_exists(tmp_path):
    where = folder(tmp_path, "omniglot", "20w1s")
    put_result(where, result_doc("protonet", [0.5, 0.75], dataset="omniglot", ways=20, queries=1))
    fo = result_doc("maml", [0.5, 0.75], dataset="omniglot", ways=20, queries=1)
    fo["method"]["hparams"]["first_order"] = True
    fo["method"]["variant"] = "1st order"
    put_result(where, fo, "fo")
    longer = result_doc("matchingnet", [0.5, 0.75], dataset="omniglot", ways=20, queries=1)
    longer["budget"]["name"] = "500"  # not the official budget: does not count
    put_result(where, longer)
    older = result_doc("scratch", [0.5, 0.75], dataset="omniglot", ways=20, queries=1)
    older["method"]["version"] = "0"  # a result of older code: a row of its own, and not today's
    put_result(where, older)
    cosine = result_doc("finetune", [0.5, 0.75], dataset="omniglot", ways=20, queries=1)
    cosine["method"]["hparams"]["head"] = "cosine"  # labelled finetune, but not the plan's linear head
    put_result(where, cosine)
    assert label(older) == "scratch v0" and label(fo) == "maml (1st order)" and label(cosine) == "finetune"
    todo = missing(tmp_path, load_plan().select("omniglot", "20w1s"))
    assert [e.label for _, e in todo] == ["matchingnet", "feature-extract", "finetune", "maml", "scratch", "reptile"]
    linear = result_doc("finetune", [0.5, 0.75], dataset="omniglot", ways=20, queries=1)
    linear["method"]["hparams"]["head"] = "linear"
    put_result(where, linear, "linear")
    assert "finetune" not in [e.label for _, e in missing(tmp_path, load_plan().select("omniglot", "20w1s"))]
    (where / "linear.json").unlink()
    # what the present rows cost, per device: protonet's and FOMAML's files (10 s fit + 2 s evaluation each); the
    # longer budget's and the older version's are not rows of the plan
    gpu = result_doc("feature-extract", [0.5, 0.75], dataset="omniglot", ways=20, queries=1)
    gpu["provenance"]["device"], gpu["fit"]["seconds"] = "GPU Test", 7200.0
    put_result(where, gpu)
    assert cost_lines(tmp_path, load_plan().select("omniglot", "20w1s")) == [
        "present, run on CPU Test Processor (2 threads): 2 row(s), fit 20.0 s + evaluation 4.0 s = 24.0 s",
        "present, run on GPU Test: 1 row(s), fit 2.00 h + evaluation 2.0 s = 2.00 h"]


def test_options_after_the_dashes_are_run_options_and_the_plan_sets_the_rest(tmp_path):
    fields, malloc = official_run_options(run_cmd, ("--device", "cpu", "--hp", "first_order=false", "--hp",
                                                    "inner_lr=0.5", "--precision", "bf16", "--no-progress",
                                                    "--no-download"))
    assert malloc
    setting = load_plan().select("omniglot", "5w1s")[0]
    fomaml = setting.entries[5]
    s = spec(setting, fomaml, tmp_path, fields, ("--device", "cpu"))
    assert (s.method, s.dataset, s.episodes, s.budget) == ("maml", "omniglot", EpisodeSpec(ways=5, shots=1), "quick")
    assert s.hparams == (("first_order", "false"), ("inner_lr", "0.5"))  # given after -- wins over the plan
    assert (s.device, s.precision, s.progress, s.download, s.compile) == ("cpu", "bf16", False, False, False)
    assert s.out == str(tmp_path / "omniglot" / "5w1s")
    assert s.command == (f"mtbench run --method maml --hp first_order=true --dataset omniglot --ways 5 --shots 1 "
                         f"--budget quick --out {tmp_path / 'omniglot' / '5w1s'} --device cpu")
    assert not official_run_options(run_cmd, ("--device", "cuda"))[1]  # no CPU allocator tuning for a CUDA run
    for given in (["--ways", "3"], ["--budget", "paper"], ["-m", "protonet"], ["--out", "x"], ["--seed", "1"]):
        with pytest.raises(UserError, match="the official plan sets"):
            official_run_options(run_cmd, tuple(given))


def test_missing_rows_run_in_process_in_plan_order_and_the_fill_resumes(tmp_path, one_thread):
    plan = plan_file(tmp_path, TINY)
    lb = tmp_path / "lb"
    args = ["official", "--plan", str(plan), "--leaderboards", str(lb), "--engine", "local", "--storage",
            str(tmp_path / "storage"), "--", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("[")]
    # the rows run as sweep trials, in plan order: each entry across the settings first
    assert lines[0::2] == ["[1/4] start  protonet synthetic/3w1s seed 0 budget 1 (local)",
                           "[2/4] start  protonet synthetic/2w1s seed 0 budget 1 (local)",
                           "[3/4] start  maml synthetic/3w1s seed 0 budget 1 hp first_order=true,meta_batch=2 (local)",
                           "[4/4] start  maml synthetic/2w1s seed 0 budget 1 hp first_order=true,meta_batch=2 (local)"]
    assert all(line.startswith(f"[{i}/4] done   ") for i, line in enumerate(lines[1::2], 1))
    for setting in load_plan(plan).settings:
        docs = [read_result(p) for p in sorted(folder(lb, "synthetic", setting.name).glob("*.json"))]
        # the label a run writes is the one the plan derived for it
        assert sorted(label(d) for d in docs) == sorted(e.label for e in setting.entries)
        assert {d["budget"]["name"] for d in docs} == {"1"}
        assert all(d["provenance"]["command"].startswith("mtbench run --method ") for d in docs)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "0 row(s) missing in synthetic/3w1s, synthetic/2w1s" in again.output


def test_a_failed_row_is_reported_in_one_line_and_the_others_run(tmp_path, monkeypatch):
    from mtbench.run import runner

    real = runner.run

    def fake(s):
        ran.append((s.method, s.episodes.ways, dict(s.hparams)))
        if s.episodes.ways == 3 and s.method == "protonet":
            raise UserError("no such images")
        if s.method == "maml" and s.episodes.ways == 2:
            raise RuntimeError("CUDA out of memory")
        return real(dataclasses.replace(s, method="protonet", hparams=()))  # a quick stand-in result

    ran: list = []
    monkeypatch.setattr(runner, "run", fake)
    result = CliRunner().invoke(main, ["official", "--plan", str(plan_file(tmp_path, TINY)), "--leaderboards",
                                       str(tmp_path / "lb"), "--engine", "local", "--storage", str(tmp_path / "st"),
                                       "--", "--hp", "train_queries=3", "--device", "cpu"])
    assert result.exit_code == 1
    assert "[1/4] FAILED protonet synthetic/3w1s seed 0 budget 1 hp train_queries=3: node " in result.output
    assert result.output.count("no such images") == 1
    assert "[2/4] done   " in result.output and "[3/4] done   " in result.output
    assert ": RuntimeError: CUDA out of memory" in result.output.split("[4/4] FAILED maml synthetic/2w1s")[1]
    assert "2 trial(s) failed" in result.output
    assert [(m, w) for m, w, _ in ran] == [("protonet", 3), ("protonet", 2), ("maml", 3), ("maml", 2)]
    assert ran[2][2] == {"first_order": "true", "meta_batch": "2", "train_queries": "3"}


def test_the_dry_run_expects_each_rows_cost_from_a_comparable_result(tmp_path):
    older = result_doc("protonet", [0.6] * 600, dataset="omniglot", queries=15)
    older["method"]["version"] = "0"  # the row as an earlier version ran it: missing now, its cost known
    older["fit"]["seconds"], older["evaluation"]["seconds"] = 100.0, 20.0
    put_result(folder(tmp_path, "omniglot", "5w1s"), older)
    result = CliRunner().invoke(main, ["official", "--leaderboards", str(tmp_path), "--dataset", "omniglot",
                                       "--setting", "5w1s", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "8 row(s) missing in omniglot/5w1s" in result.output
    assert "[1/8] protonet on omniglot/5w1s: expected 0.03 h (as protonet.json)" in result.output
    assert "[2/8] matchingnet on omniglot/5w1s: expected cost unknown" in result.output
    assert "expected 0.03 h one after another, plus 7 row(s) of unknown cost" in result.output


def test_dry_run_and_unknown_setting(tmp_path):
    result = CliRunner().invoke(main, ["official", "--leaderboards", str(tmp_path), "--setting", "transfer200-50",
                                       "--dry-run", "--", "--device", "cuda"])
    assert result.exit_code == 0 and "8 row(s) missing in xray/transfer200-50" in result.output
    assert "present, run on" not in result.output  # an empty folder: no row, no cost
    assert "[1/8] protonet on xray/transfer200-50" in result.output
    assert (f"mtbench run --method protonet --dataset xray --train-images 200 --test-images 50 --budget quick "
            f"--out {tmp_path / 'xray' / 'transfer200-50'} --device cuda") in result.output
    assert "[6/8] maml (1st order) on xray/transfer200-50" in result.output
    assert "--method maml --hp first_order=true --dataset xray" in result.output
    assert "no comparable result: the cost of the 8 row(s) is unknown" in result.output
    assert not list(tmp_path.iterdir())  # nothing ran
    result = CliRunner().invoke(main, ["official", "--setting", "7w3s", "--dry-run"])
    assert result.exit_code == 2 and "no official setting */7w3s; the plan has omniglot/5w1s" in result.output
    result = CliRunner().invoke(main, ["official", "--dry-run", "--", "--shots", "5"])
    assert result.exit_code == 2 and "--shots after --: the official plan sets" in result.output


def test_the_dry_run_expects_a_cpu_rows_cost_from_a_cpu_result_before_a_gpus(tmp_path):
    """A GPU's minutes do not predict a CPU's hours: the CPU result is the estimate though the GPU's is newer; with
    only the GPU's, the estimate says where it ran."""
    where = folder(tmp_path, "omniglot", "5w1s")
    cpu = result_doc("protonet", [0.6] * 600, dataset="omniglot", queries=15, stamp="2026-01-01T00:00:00+00:00")
    cpu["method"]["version"], cpu["fit"]["seconds"], cpu["evaluation"]["seconds"] = "0", 3000.0, 600.0
    gpu = result_doc("protonet", [0.6] * 600, dataset="omniglot", queries=15, stamp="2026-01-02T00:00:00+00:00")
    gpu["method"]["version"], gpu["fit"]["seconds"], gpu["evaluation"]["seconds"] = "0", 30.0, 6.0
    gpu["provenance"].update(device_type="cuda", device="NVIDIA Test GPU")
    put_result(where, gpu, "gpu")
    args = ["official", "--leaderboards", str(tmp_path), "--dataset", "omniglot", "--setting", "5w1s", "--dry-run",
            "--", "--device", "cpu"]
    output = CliRunner().invoke(main, args).output
    assert "[1/8] protonet on omniglot/5w1s: expected 36.0 s (as gpu.json on CUDA)" in output
    assert "(1 row(s) estimated from a result on another kind of device)" in output
    put_result(where, cpu, "cpu")
    assert "[1/8] protonet on omniglot/5w1s: expected 1.00 h (as cpu.json)" in CliRunner().invoke(main, args).output
