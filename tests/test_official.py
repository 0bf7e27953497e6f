"""``mtbench official``: the plan, which rows count as present, the order rows run in, and the commands."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from mtbench.cli import main
from mtbench.board.official import PLAN, missing, settings
from support import put_result, result_doc


def test_the_plan_covers_the_official_settings_with_every_method():
    assert [(s.dataset, s.name) for s in PLAN] == [
        ("omniglot", "5w1s"), ("omniglot", "5w5s"), ("omniglot", "20w1s"), ("miniimagenet", "5w1s"),
        ("miniimagenet", "5w5s"), ("xray", "transfer200-50"), ("omniglot-shift", "5w1s")]
    labels = {e.label for e in PLAN[0].entries}
    assert {"protonet", "matchingnet", "maml", "maml (1st order)", "reptile", "finetune", "feature-extract",
            "scratch"} == labels
    assert [e.label for e in PLAN[-1].entries] == ["dann", "source-only"]


def test_a_row_counts_once_a_quick_result_with_its_label_exists(tmp_path):
    folder = tmp_path / "omniglot" / "20w1s"
    put_result(folder, result_doc("protonet", [0.5, 0.75], dataset="omniglot", ways=20, queries=1))
    fo = result_doc("maml", [0.5, 0.75], dataset="omniglot", ways=20, queries=1)
    fo["method"]["hparams"]["first_order"] = True
    fo["method"]["variant"] = "1st order"  # as the runner writes it (Maml.variant)
    put_result(folder, fo, "fo")
    longer = result_doc("matchingnet", [0.5, 0.75], dataset="omniglot", ways=20, queries=1)
    longer["budget"]["name"] = "500"  # not the official budget: does not count
    put_result(folder, longer)
    todo = missing(tmp_path, settings("omniglot", "20w1s"))
    assert [e.label for _, e in todo] == ["matchingnet", "feature-extract", "finetune", "maml", "scratch",
                                          "reptile"]


def test_rows_run_method_by_method_across_settings_and_failures_are_counted(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or (1 if "maml" in argv else 0))
    result = CliRunner().invoke(main, ["official", "--leaderboards", str(tmp_path), "--dataset", "omniglot",
                                       "--", "--device", "cpu"])
    assert result.exit_code == 1  # the maml runs "failed"
    assert "24 row(s) missing" in result.output and "FAILED (exit 1)" in result.output
    assert calls[0][:3] == [sys.executable, "-m", "mtbench"]
    first = [c[3:] for c in calls[:3]]
    assert [(c[c.index("--method") + 1], c[c.index("--out") + 1]) for c in first] == [
        ("protonet", str(tmp_path / "omniglot" / "5w1s")), ("protonet", str(tmp_path / "omniglot" / "5w5s")),
        ("protonet", str(tmp_path / "omniglot" / "20w1s"))]
    assert all(c[-2:] == ["--device", "cpu"] and "--budget" in c and "quick" in c for c in calls)


def test_dry_run_and_unknown_setting(tmp_path):
    result = CliRunner().invoke(main, ["official", "--leaderboards", str(tmp_path), "--setting", "transfer200-50",
                                       "--dry-run"])
    assert result.exit_code == 0 and "8 row(s) missing in xray/transfer200-50" in result.output
    assert "mtbench run --method protonet --dataset xray --train-images 200 --test-images 50 --budget quick" \
        in result.output
    result = CliRunner().invoke(main, ["official", "--setting", "7w3s", "--dry-run"])
    assert result.exit_code == 2 and "no official setting */7w3s; the plan has omniglot/5w1s" in result.output
