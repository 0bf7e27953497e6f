"""Tests for the ``mtbench`` command line (click's CliRunner, in process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mtbench.cli import main
from mtbench.results import read_result


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    """``run`` with a result folder that does not exist yet, no progress bars and no allocator tuning
    (which would change glibc's settings for the whole test process)."""
    return ["run", "--out", str(tmp_path / "X"), "--data-root", str(tmp_path / "data"), "--no-progress",
            "--no-malloc-tuning", *extra]


def assert_one_line_user_error(result, tmp_path: Path, *mentions: str) -> str:
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a crash
    output = result.output
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("mtbench: error:"), output
    for text in mentions:
        assert text in lines[0], (text, output)
    assert not (tmp_path / "X").exists()  # nothing written, not even the folder
    return lines[0]


# -- ls and help --------------------------------------------------------------------------------
def test_ls_lists_every_builtin_component():
    result = invoke("ls")
    assert result.exit_code == 0, result.output
    for name in ("omniglot", "synthetic", "protonet", "maml", "conv4"):
        assert name in result.output
    for header in ("datasets:", "methods:", "backbones:"):
        assert header in result.output
    # each section's descriptions start in one column, whatever the length of its names (reptile-transductive)
    for section in result.output.split(":\n")[1:]:
        rows = [line for line in section.splitlines() if line.startswith("  ")]
        starts = {len(line) - len(line[2:].split("  ", 1)[1].lstrip()) for line in rows}
        assert len(starts) == 1, rows


def test_ls_of_one_kind_lists_only_that_kind():
    result = invoke("ls", "methods")
    assert result.exit_code == 0, result.output
    assert "protonet" in result.output and "maml" in result.output
    assert "omniglot" not in result.output and "conv4" not in result.output


@pytest.mark.parametrize(("args", "expected"), [(["--help"], "run"), (["-h"], "ls"), (["run", "--help"], "--method"),
                                                (["run", "-h"], "--budget")])
def test_help_exits_zero(args, expected):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert expected in result.output


def test_run_h_still_works_after_official_parsed_its_run_options():
    """``mtbench official`` parses its ``-- run options`` with ``run``'s own command, outside the group: click caches a
    command's help option at its first parse, which once made a later ``run -h`` "No such option '-h'"."""
    from mtbench.cli.board import official_run_options
    from mtbench.cli.main import run_cmd

    official_run_options(run_cmd, ("--device", "cpu"))
    result = invoke("run", "-h")
    assert result.exit_code == 0, result.output
    assert "--budget" in result.output


def test_version():
    from mtbench import __version__

    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


# -- user errors: one line, no traceback, nothing written ----------------------------------------
@pytest.mark.parametrize(
    ("extra", "mentions"),
    [
        (["--method", "nope", "--dataset", "synthetic"], ["nope", "protonet"]),
        (["--method", "protonte", "--dataset", "synthetic"], ["did you mean 'protonet'"]),
        (["--method", "protonet", "--dataset", "nope"], ["nope", "synthetic"]),
        (["--method", "protonet", "--dataset", "synthetic", "--ways", "2000"], ["2000", "--ways 32 or fewer"]),
        (["--method", "protonet", "--dataset", "synthetic", "--shots", "10", "--queries", "15"],
         ["25 images per class", "only 20"]),
        (["--method", "protonet", "--dataset", "synthetic", "--ways", "1"], ["--ways", "at least 2"]),
        (["--method", "protonet", "--dataset", "synthetic", "--episodes", "0"], ["--episodes"]),
        (["--method", "protonet", "--dataset", "synthetic", "--hp", "nonsense=1"], ["nonsense", "train_ways"]),
        (["--method", "protonet", "--dataset", "synthetic", "--hp", "noequals"], ["noequals", "name=value"]),
        (["--method", "maml", "--dataset", "synthetic", "--hp", "inner_lr=abc"], ["inner_lr", "abc"]),
        (["--method", "maml", "--dataset", "synthetic", "--hp", "inner_lr=-1"], ["inner_lr"]),
        (["--method", "maml", "--dataset", "synthetic", "--device", "tpu"], ["tpu"]),
    ],
)
def test_user_errors_are_one_line(tmp_path, extra, mentions):
    result = invoke(*run_args(tmp_path, *extra))
    assert_one_line_user_error(result, tmp_path, *mentions)
    assert result.exit_code == 2


def test_device_cuda_without_a_gpu_is_a_user_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    result = invoke(*run_args(tmp_path, "--method", "protonet", "--dataset", "synthetic", "--device", "cuda"))
    line = assert_one_line_user_error(result, tmp_path, "--device cuda")
    assert "cpu" in line  # says what to use instead


def test_out_that_is_a_file_is_a_user_error(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    result = invoke("run", "--method", "protonet", "--dataset", "synthetic", "--out", str(target),
                    "--no-progress", "--no-malloc-tuning")
    assert result.exit_code == 2
    assert result.output.strip().startswith("mtbench: error:")
    assert str(target) in result.output
    assert target.read_text() == "not a folder"


def test_bad_budget_is_rejected_without_traceback_or_output_folder(tmp_path):
    result = invoke(*run_args(tmp_path, "--method", "protonet", "--dataset", "synthetic", "--budget", "soon"))
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "'soon'" in result.output
    assert not (tmp_path / "X").exists()


def test_bad_budget_is_a_one_line_user_error(tmp_path):
    result = invoke(*run_args(tmp_path, "--method", "protonet", "--dataset", "synthetic", "--budget", "soon"))
    assert_one_line_user_error(result, tmp_path, "soon")


# -- a real run ---------------------------------------------------------------------------------
def test_tiny_run_writes_one_result_and_prints_a_summary(tmp_path, one_thread):
    out = tmp_path / "results"
    result = invoke("run", "--method", "protonet", "--dataset", "synthetic", "--budget", "3", "--episodes", "10",
                    "--queries", "5", "--no-progress", "--no-malloc-tuning", "--device", "cpu",
                    "--data-root", str(tmp_path / "data"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "accuracy" in result.output
    assert "±" in result.output
    written = list(out.iterdir())
    assert len(written) == 1 and written[0].suffix == ".json"
    assert str(written[0]) in result.output
    doc = read_result(written[0])
    assert doc["protocol"]["episodes"] == 10 and doc["protocol"]["queries"] == 5
    assert doc["budget"] == {"name": "3", "iterations": 3}
    assert f"{doc['accuracy']['mean']:.4f}" in result.output
