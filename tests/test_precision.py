"""``mtbench run --precision {fp32,bf16}`` and ``--compile``: what runs under autocast, what is compiled,
what the result records, what ``mtbench compare`` and the summary show, and the errors."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mtbench.cli import main
from mtbench.cli.main import run_cmd
from mtbench.board.compare import collect, tables
from mtbench.board.labels import label
from mtbench.data.episodes import EpisodeSpec
from mtbench.core.errors import UserError
from mtbench.methods import METHODS
from mtbench.core.metrics import mean_ci95
from mtbench.results import read_result, upgrade, validate
from mtbench.run.runner import RunSpec, run
from mtbench.core.runtime import PRECISIONS, autocast

TINY = ["--method", "protonet", "--dataset", "synthetic", "--budget", "5", "--episodes", "20", "--queries", "5",
        "--device", "cpu", "--no-progress", "--no-malloc-tuning"]


def cli_run(tmp: Path, *extra: str) -> dict:
    """A tiny protonet run through the CLI (in process); its one result, read and validated."""
    out = tmp / "results"
    result = CliRunner().invoke(main, ["run", *TINY, "--data-root", str(tmp.parent / "data"), "--out", str(out),
                                       *extra])
    assert result.exit_code == 0, result.output
    [path] = out.glob("*.json")
    doc = read_result(path)
    doc["summary"] = result.output
    return doc


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread) -> dict[str, dict]:
    """The tiny run without either option, with ``--precision fp32`` and with ``--precision bf16``."""
    root = tmp_path_factory.mktemp("precision")
    return {name: cli_run(root / name, *extra) for name, extra in
            [("plain", ()), ("fp32", ("--precision", "fp32")), ("bf16", ("--precision", "bf16"))]}


# -- what a run records -------------------------------------------------------------------------
def test_fp32_is_recorded_and_equals_a_run_without_the_option(runs):
    plain, fp32 = runs["plain"], runs["fp32"]
    for doc in (plain, fp32):
        assert doc["provenance"]["precision"] == "fp32" and doc["provenance"]["compile"] is False
    assert fp32["protocol"]["episodes_sha"] == plain["protocol"]["episodes_sha"]
    assert fp32["accuracy"]["per_episode"] == plain["accuracy"]["per_episode"]
    assert fp32["accuracy"]["by_step"] == plain["accuracy"]["by_step"]
    device_line = next(line for line in fp32["summary"].splitlines() if line.startswith("device"))
    assert device_line.endswith(fp32["provenance"]["device"])  # nothing added for fp32 uncompiled


def test_bf16_runs_on_the_cpu_and_is_recorded(runs):
    doc = runs["bf16"]
    assert validate({k: v for k, v in doc.items() if k != "summary"}) == []
    assert doc["provenance"]["precision"] == "bf16" and doc["provenance"]["compile"] is False
    assert doc["protocol"]["episodes_sha"] == runs["fp32"]["protocol"]["episodes_sha"]
    assert all(0.0 <= a <= 1.0 for a in doc["accuracy"]["per_episode"])
    assert doc["accuracy"]["mean"] > 0.4  # learnt something (chance is 0.2); fp32 gets ~0.8 here
    device_line = next(line for line in doc["summary"].splitlines() if line.startswith("device"))
    assert device_line.endswith("(bf16)")


def test_fit_and_evaluation_run_under_bf16_autocast_only_when_asked(tmp_path, monkeypatch, one_thread):
    """bf16: both stages under autocast to bfloat16; fp32: no autocast anywhere. Nothing stays enabled after."""
    import mtbench.run.stages as runner
    from mtbench.baselines.protonet import ProtoNet

    seen: list[tuple[str, bool, torch.dtype]] = []

    def note(stage):
        seen.append((stage, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))

    real_fit, real_evaluate = ProtoNet.fit, runner.evaluate
    monkeypatch.setattr(ProtoNet, "fit", lambda self, ctx: (note("fit"), real_fit(self, ctx))[1])
    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: (note("evaluate"), real_evaluate(*a, **k))[1])
    spec = RunSpec(method="protonet", dataset="synthetic", episodes=EpisodeSpec(5, 1, 5, 4, 0), budget="2",
                   device="cpu", data_root=str(tmp_path / "data"), out=None, progress=False)
    run(dataclasses.replace(spec, precision="bf16"))
    assert seen == [("fit", True, torch.bfloat16), ("evaluate", True, torch.bfloat16)]
    assert not torch.is_autocast_enabled("cpu")
    seen.clear()
    run(spec)
    assert [(stage, enabled) for stage, enabled, _ in seen] == [("fit", False), ("evaluate", False)]


def test_autocast_is_no_context_at_all_for_fp32():
    device = torch.device("cpu")
    with autocast(device, "fp32") as ctx:
        assert ctx is None and not torch.is_autocast_enabled("cpu")
    with autocast(device, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


def test_weights_updated_inside_one_bf16_region_are_used_by_the_next_forward():
    """Training loops run inside one autocast region: no cached bfloat16 copy of the old weights."""
    layer = torch.nn.Linear(4, 2)
    x = torch.ones(1, 4)
    with autocast(torch.device("cpu"), "bf16"):
        before = layer(x)
        with torch.no_grad():
            layer.weight.add_(1.0)  # an optimiser step, in place
        after = layer(x)
    assert torch.allclose(after.float() - before.float(), torch.full((1, 2), 4.0), atol=0.1)


def test_a_bf16_run_that_trains_per_episode_learns(tmp_path, one_thread):
    """scratch trains a fresh network on every support set inside the evaluation's autocast region."""
    spec = RunSpec(method="scratch", dataset="synthetic", episodes=EpisodeSpec(5, 1, 5, 6, 0), device="cpu",
                   data_root=str(tmp_path / "data"), out=None, progress=False)
    fp32, _ = run(spec)
    bf16, _ = run(dataclasses.replace(spec, precision="bf16"))
    assert fp32["accuracy"]["mean"] > 0.7
    assert bf16["accuracy"]["mean"] > 0.7  # 0.2 (chance) with autocast's weight cache on


# -- errors -------------------------------------------------------------------------------------
def test_the_cli_rejects_another_precision_with_clicks_message(tmp_path):
    result = CliRunner().invoke(main, ["run", *TINY, "--precision", "fp16", "--out", str(tmp_path / "X")])
    assert result.exit_code == 2
    assert "Invalid value for '--precision': 'fp16' is not one of 'fp32', 'bf16'." in result.output
    assert not (tmp_path / "X").exists()


def test_the_cli_offers_the_precisions_the_runner_knows():
    option = next(p for p in run_cmd.params if p.name == "precision")
    assert tuple(option.type.choices) == PRECISIONS


def test_the_runner_rejects_another_precision(tmp_path):
    with pytest.raises(UserError, match="--precision 'fp16'"):
        run(RunSpec(method="protonet", dataset="synthetic", precision="fp16", data_root=str(tmp_path), out=None))


@pytest.mark.parametrize("method", ["maml", "reptile", "reptile-transductive"])
def test_compile_with_a_torch_func_method_is_a_one_line_error(tmp_path, method):
    out = tmp_path / "X"
    result = CliRunner().invoke(main, ["run", "--method", method, "--dataset", "synthetic", "--compile",
                                       "--no-progress", "--no-malloc-tuning", "--data-root", str(tmp_path / "data"),
                                       "--out", str(out)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"mtbench: error: --compile: {method} ") and line.endswith("drop --compile")
    assert not out.exists() and not (tmp_path / "data").exists()  # refused before anything else


# -- which methods compile, and how --------------------------------------------------------------
def test_methods_that_call_their_networks_directly_are_compilable():
    compilable = {name for name, cls in METHODS.items() if cls.compilable}
    assert compilable == {"protonet", "matchingnet", "finetune", "feature-extract", "dann", "source-only", "scratch"}
    assert not METHODS.get("maml").compilable and not METHODS.get("reptile").compilable


@pytest.mark.parametrize("name", ["protonet", "matchingnet", "dann"])
def test_compiling_keeps_the_state_dict_keys(name):
    """nn.Module.compile in place: a checkpoint of a compiled method loads into a plain one and back."""
    cls = METHODS.get(name)
    hparams = cls.Hparams(fce=True) if name == "matchingnet" else cls.Hparams()

    def build():
        return cls(hparams, (3, 16, 16), torch.Generator().manual_seed(0), torch.device("cpu"))

    plain, compiled = build(), build()
    compiled.compile_modules()
    assert compiled.compiled and not plain.compiled
    assert set(compiled.modules()) == set(plain.modules())
    for attr, module in compiled.modules().items():
        assert module._compiled_call_impl is not None
        assert list(module.state_dict()) == list(plain.modules()[attr].state_dict())
        plain.modules()[attr].load_state_dict(module.state_dict())


# -- compare -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("precision", "compiled", "expected"), [
    (None, None, "protonet"), ("fp32", False, "protonet"), ("bf16", False, "protonet (bf16)"),
    ("fp32", True, "protonet (compiled)"), ("bf16", True, "protonet (bf16, compiled)"),
])
def test_compare_labels_say_bf16_and_compiled(runs, precision, compiled, expected):
    doc = copy.deepcopy(runs["plain"])
    del doc["summary"], doc["provenance"]["precision"], doc["provenance"]["compile"]  # as an older record
    if precision is not None:
        doc["provenance"].update(precision=precision, compile=compiled)
    else:  # a version-1 record older than the options is read as fp32, uncompiled
        doc = upgrade({**doc, "schema_version": 1})
    assert validate(doc) == []
    assert label(doc) == expected
    doc["init"] = {"method": "maml"}
    assert label(doc) == expected.replace("protonet", "maml → protonet")


def test_compare_table_tells_the_rows_apart(runs, tmp_path):
    for name, doc in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({k: v for k, v in doc.items() if k != "summary"}))
    [(_, frame)] = tables(collect([tmp_path]))
    # the run without the option and the fp32 one are the same run (the same scores): shown once
    assert sorted(frame["method"]) == ["protonet", "protonet (bf16)"]
    result = CliRunner().invoke(main, ["compare", str(tmp_path)])
    assert result.exit_code == 0 and "protonet (bf16)" in result.output, result.output
    assert ("fp32.json: the same run as plain.json" in result.output
            or "plain.json: the same run as fp32.json" in result.output), result.output


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("precision", "fp16", "provenance.precision: 'fp16' is not one of fp32, bf16"),
    ("compile", "yes", "provenance.compile: expected bool, got str"),
])
def test_validate_rejects_a_bad_precision_or_compile(runs, key, value, problem):
    doc = copy.deepcopy(runs["plain"])
    del doc["summary"]
    doc["provenance"][key] = value
    assert validate(doc) == [problem]


# -- a compiled run (inductor needs a C++ compiler: ~55 s on 2 busy cores, ~15 s with its cache warm) --
@pytest.mark.slow
def test_a_compiled_protonet_run_scores_as_the_plain_one(tmp_path, runs, one_thread):
    compiled = cli_run(tmp_path / "compiled", "--compile", "--save", str(tmp_path / "fit.pt"))
    plain = runs["plain"]
    assert compiled["provenance"]["compile"] is True and compiled["provenance"]["precision"] == "fp32"
    assert compiled["protocol"]["episodes_sha"] == plain["protocol"]["episodes_sha"]
    mean, ci = plain["accuracy"]["mean"], plain["accuracy"]["ci95"]
    assert abs(compiled["accuracy"]["mean"] - mean) <= ci
    diff_mean, diff_ci = mean_ci95([a - b for a, b in zip(compiled["accuracy"]["per_episode"],
                                                          plain["accuracy"]["per_episode"])])
    assert abs(diff_mean) <= max(diff_ci, 1e-9)  # paired: no difference beyond noise
    assert "(compiled)" in compiled["summary"]
    # the checkpoint of the compiled fit loads into an uncompiled run and scores the same episodes
    again = cli_run(tmp_path / "again", "--budget", "0", "--init", str(tmp_path / "fit.pt"))
    assert again["init"]["method"] == "protonet" and again["provenance"]["compile"] is False
    assert abs(again["accuracy"]["mean"] - compiled["accuracy"]["mean"]) <= compiled["accuracy"]["ci95"]
