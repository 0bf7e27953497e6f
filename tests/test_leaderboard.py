"""``mtbench leaderboard`` and ``mtbench validate``: ranking on shared draws only, adaptation speed, paired
differences, and the checks that catch an edited result. Generated result files, except where marked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mtbench.cli import main
from mtbench.results import SCHEMA_VERSION
from mtbench.results.integrity import consistency
from mtbench.board.leaderboard import Entry, adaptation_speed, configuration, frame, group, load, paired, rows
from support import put_result, requires_real_data, result_doc, shared_root

REPO = Path(__file__).resolve().parent.parent
GOOD = [0.9, 1.0, 0.8, 0.9, 1.0]   # multiples of 1/10: 5-way, 2 queries per class
WORSE = [0.6, 0.7, 0.5, 0.6, 0.8]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def board(tmp_path) -> Path:
    lb = tmp_path / "leaderboards"
    put_result(lb / "synthetic" / "5w1s", result_doc("good", GOOD, by_step=[0.2, 0.86]))
    put_result(lb / "synthetic" / "5w1s", result_doc("worse", WORSE))
    put_result(lb / "synthetic" / "5w1s", result_doc("other-draws", GOOD, sha="b" * 64))
    put_result(lb / "synthetic" / "5w5s", result_doc("five-shot", GOOD, shots=5))
    return lb


def test_groups_never_mix_draws_settings_or_schema_versions(board):
    groups = load(board)
    assert [(g.dataset, g.setting, g.sha[0], [e.doc["method"]["name"] for e in g.entries]) for g in groups] == [
        ("synthetic", "5w1s", "a", ["good", "worse"]), ("synthetic", "5w1s", "b", ["other-draws"]),
        ("synthetic", "5w5s", "a", ["five-shot"])]
    later = result_doc("future", GOOD, schema_version=SCHEMA_VERSION + 1)
    assert len(group([(Path("a.json"), result_doc("good", GOOD)), (Path("b.json"), later)])) == 2
    # one sha claimed with another number of episodes (a hand-made file): ranked apart, never paired (which raised)
    shorter = result_doc("shorter", GOOD[:2])
    assert [len(g.entries) for g in group([(Path("a.json"), result_doc("good", GOOD)), (Path("c.json"), shorter)])] \
        == [1, 1]


def test_ranked_table_has_paired_difference_speed_and_device(board):
    [g] = load(board, "synthetic", "5w1s")[:1]
    table = frame(g)
    assert list(table["method"]) == ["good", "worse"] and list(table["rank"]) == [1, 2]
    mean, ci, p = paired(g.rows[1], g.rows[0])
    assert mean == pytest.approx(-0.28) and ci > 0 and p < 0.05
    assert table["vs best (paired)"][1].startswith("-0.2800 ± ") and table["vs best (paired)"][1].endswith(", *)")
    # good: steps 0, 1, 2 at 0.2, 0.86, 0.92 (final); 95 % of 0.92 = 0.874 -> step 2; 90 % = 0.828 -> step 1
    assert adaptation_speed(g.entries[0].doc, 0.95) == (2, 3.0)
    assert adaptation_speed(g.entries[0].doc, 0.90) == (1, 2.0)
    assert table["step to 95%"][0] == 2 and table["ms to 95%"][0] == "3.0"
    assert table["device"][0] == "CPU Test Processor (2 threads)" and table["budget"][0] == "quick (CPU)"
    assert list(table["reproduced"]) == ["-", "-"]


def test_rows_say_whether_a_recorded_re_run_reproduced_them() -> None:
    run = {"by": "a@b", "at": "2026-12-01T10:00:00+00:00", "device": "CPU", "git_commit": None,
           "verdict": "REPRODUCED", "identical": True, "mean_difference": 0.0}
    differs = {**run, "at": "2026-12-02T10:00:00+00:00", "verdict": "DIFFERS", "identical": False}
    docs = [(Path("a.json"), result_doc("good", GOOD, reproduced=[run])),
            (Path("b.json"), result_doc("worse", WORSE, reproduced=[run, differs]))]
    table = frame(group(docs)[0])
    assert list(table["reproduced"]) == ["yes, 2026-12-01", "DIFFERS, 2026-12-02 (2 re-runs)"]


def test_cli_prints_ranked_tables_and_filters(board):
    result = invoke("leaderboard", "--leaderboards", str(board), "--dataset", "synthetic", "--protocol", "5w1s")
    assert result.exit_code == 0, result.output
    assert result.output.count("synthetic 5w1s (5-way 1-shot") == 2 and "five-shot" not in result.output
    assert "good" in result.output and "step to 95%" in result.output
    md = invoke("leaderboard", "--leaderboards", str(board), "--markdown", "--fraction", "0.9")
    assert md.exit_code == 0 and md.output.count("| rank | method |") == 3 and "step to 90%" in md.output


@pytest.mark.parametrize(("args", "mentions"), [
    (["--dataset", "omniglot"], "no results for dataset omniglot"),
    (["--protocol", "20w1s"], "it has: synthetic 5w1s, synthetic 5w5s"),
])
def test_cli_unknown_filter_is_a_one_line_error(board, args, mentions):
    result = invoke("leaderboard", "--leaderboards", str(board), *args)
    assert result.exit_code == 2 and mentions in result.output and "Traceback" not in result.output


def test_a_folder_given_as_an_argument_is_a_leaderboard_one_of_its_folders_or_a_folder_of_results(board, tmp_path):
    whole = invoke("leaderboard", str(board))
    assert whole.exit_code == 0 and "synthetic 5w1s" in whole.output and "synthetic 5w5s" in whole.output
    setting = invoke("leaderboard", str(board / "synthetic" / "5w5s"))
    assert setting.exit_code == 0, setting.output
    assert "five-shot" in setting.output and "synthetic 5w1s" not in setting.output
    assert setting.output == invoke("leaderboard", "--leaderboards", str(board), "-p", "5w5s").output
    dataset = invoke("leaderboard", str(board / "synthetic"), "-p", "5w1s")
    assert dataset.exit_code == 0 and "good" in dataset.output and "five-shot" not in dataset.output
    # where `mtbench run --out results` wrote its files, in no layout: ranked as they are
    put_result(tmp_path / "results", result_doc("good", GOOD), "a")
    put_result(tmp_path / "results", result_doc("worse", WORSE), "b")
    (tmp_path / "results" / ".venv").mkdir()
    (tmp_path / "results" / ".venv" / "package.json").write_text("{}")  # a hidden folder's JSON is not a result
    loose = invoke("leaderboard", str(tmp_path / "results"))
    assert loose.exit_code == 0 and loose.output.index("good") < loose.output.index("worse"), loose.output
    assert "package.json" not in loose.output
    (board / "throughput").mkdir()
    (board / "throughput" / "bench.json").write_text("{}")
    assert invoke("leaderboard", str(board)).output == whole.output  # bench files are not results
    (tmp_path / "empty").mkdir()
    for args, says in [((str(board / "synthetic" / "5w5s"), "-p", "5w1s"), "no results for dataset any, protocol"),
                       ((str(board), "--leaderboards", str(board)), "give the folder once"),
                       ((str(board / "throughput"),), "holds `mtbench bench` files, not results"),
                       ((str(tmp_path / "nowhere"),), "is not a folder"),
                       ((str(tmp_path / "empty"),), "holds no result files")]:
        result = invoke("leaderboard", *args)
        assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, (args, result.output)


def test_committed_omniglot_leaderboard_prints():
    result = invoke("leaderboard", "--leaderboards", str(REPO / "leaderboards"), "--dataset", "omniglot")
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (REPO / "leaderboards" / "omniglot").glob("*/*.json"))
    assert all(name in result.output for name in files) and "protonet" in result.output


# -- validate ------------------------------------------------------------------------------------
def test_consistency_accepts_what_adds_up_and_names_each_edit():
    doc = result_doc("good", GOOD, by_step=[0.5])
    assert consistency(doc) == []
    edited = json.loads(json.dumps(doc))
    edited["accuracy"]["mean"] += 0.01
    assert any(p.startswith("accuracy.mean = ") for p in consistency(edited))
    edited = json.loads(json.dumps(doc))
    edited["accuracy"]["per_episode"][0] = 0.95  # not k/10
    assert consistency(edited)[0].startswith("accuracy.per_episode[0] = 0.95 is not a possible score on 10 queries")
    edited = json.loads(json.dumps(doc))
    edited["accuracy"]["by_step"][-1]["mean"] = 0.5
    assert "accuracy.by_step: its last step differs from accuracy.mean / ci95" in consistency(edited)


def test_validate_cli_without_shas(board, tmp_path):
    result = invoke("validate", str(board), "--no-shas")
    assert result.exit_code == 0 and result.output.count("ok   ") == 4 and "all result files are valid" in result.output
    path = next((board / "synthetic" / "5w1s").glob("worse.json"))
    doc = json.loads(path.read_text())
    doc["accuracy"]["mean"] = 0.99
    path.write_text(json.dumps(doc))
    result = invoke("validate", str(board), "--no-shas")
    assert result.exit_code == 1 and f"FAIL {path}" in result.output and "accuracy.mean = 0.99" in result.output
    assert invoke("validate", str(tmp_path / "nowhere")).exit_code == 2


def test_validate_recomputes_the_episodes_sha_of_generated_data(tmp_path):
    """A real run on the synthetic set validates; the same file with another sha does not."""
    out = tmp_path / "lb" / "synthetic" / "5w1s"
    done = invoke("run", "-m", "protonet", "-d", "synthetic", "--budget", "2", "--episodes", "5", "--out", str(out),
                  "--no-progress")
    assert done.exit_code == 0, done.output
    assert invoke("validate", str(tmp_path / "lb")).exit_code == 0
    [path] = out.glob("*.json")
    doc = json.loads(path.read_text())
    doc["protocol"]["episodes_sha"] = "0" * 64
    path.write_text(json.dumps(doc))
    result = invoke("validate", str(tmp_path / "lb"))
    assert result.exit_code == 1 and "is not the official" in result.output


@pytest.mark.realdata
def test_committed_leaderboards_validate_and_an_edited_copy_fails(tmp_path):
    for name in ("omniglot", "mini-imagenet", "chest_xray"):
        requires_real_data(name)
    result = invoke("validate", str(REPO / "leaderboards"), "--data-root", str(shared_root()))
    assert result.exit_code == 0, result.output
    copy = tmp_path / "leaderboards"
    shutil.copytree(REPO / "leaderboards" / "omniglot", copy / "omniglot")
    path = sorted(copy.glob("omniglot/5w1s/*protonet*.json"))[0]
    doc = json.loads(path.read_text())
    doc["accuracy"]["mean"] = round(doc["accuracy"]["mean"] + 0.003, 4)
    path.write_text(json.dumps(doc, indent=1))
    result = invoke("validate", str(copy), "--data-root", str(shared_root()))
    assert result.exit_code == 1 and result.output.count("FAIL") == 1 and f"FAIL {path}" in result.output


def test_cuda_graph_splits_no_cpu_row_but_a_cuda_one(one_thread):
    # cuda_graph acts on CUDA only: a CPU result that predates it (or sets it off) ran what one with it ran
    new = result_doc("protonet", [1.0, 0.5], fit_seed=1)
    old = result_doc("protonet", [0.5, 0.5], fit_seed=0)
    new["method"]["hparams"] = {"lr": 0.001, "cuda_graph": True}
    old["method"]["hparams"] = {"lr": 0.001}
    assert configuration(old) == configuration(new)
    assert [r.seeds for r in rows([Entry(Path("old.json"), old), Entry(Path("new.json"), new)])] == [[0, 1]]
    on_gpu = {**old["provenance"], "device_type": "cuda", "device": "NVIDIA H200"}
    old_gpu, new_gpu = ({**d, "provenance": on_gpu} for d in (old, new))
    assert configuration(old_gpu) != configuration(new_gpu)  # on CUDA the older result ran eagerly
    other_lr = {**new, "method": {**new["method"], "hparams": {"lr": 0.01, "cuda_graph": True}}}
    assert configuration(other_lr) != configuration(old)
