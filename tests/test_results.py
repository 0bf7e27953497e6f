"""Tests for mtbench.results (schema, validation, atomic writing, reading) and mtbench.core.metrics."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from mtbench.data.episodes import EpisodeSpec
from mtbench.core.errors import UserError
from mtbench.core.metrics import Z95, mean_ci95
from mtbench.results import SCHEMA, SCHEMA_VERSION, read_result, validate, write_result
from mtbench.run.runner import RunSpec, run


def tiny_spec(tmp: Path, out: str | None) -> RunSpec:
    return RunSpec(method="protonet", dataset="synthetic", episodes=EpisodeSpec(5, 1, 5, 20, 0), budget="5",
                   device="cpu", data_root=str(tmp / "data"), out=out, progress=False)


@pytest.fixture(scope="module")
def produced(tmp_path_factory, one_thread):
    """One real tiny run: ``(doc, path, out_dir, tmp)``."""
    tmp = tmp_path_factory.mktemp("run")
    out = tmp / "results"
    doc, path = run(tiny_spec(tmp, str(out)))
    return doc, path, out, tmp


@pytest.fixture
def doc(produced):
    return copy.deepcopy(produced[0])


# -- the record a run produces ------------------------------------------------------------------
def test_run_result_conforms_to_the_schema(produced):
    doc = produced[0]
    assert validate(doc) == []
    assert doc["schema_version"] == SCHEMA_VERSION
    assert set(SCHEMA) <= set(doc)
    assert doc["method"]["name"] == "protonet"
    assert doc["dataset"]["name"] == "synthetic"
    assert doc["protocol"]["ways"] == 5 and doc["protocol"]["episodes"] == 20
    assert doc["budget"] == {"name": "5", "iterations": 5}
    assert len(doc["accuracy"]["per_episode"]) == 20
    assert all(0.0 <= a <= 1.0 for a in doc["accuracy"]["per_episode"])
    mean, ci = mean_ci95(doc["accuracy"]["per_episode"])
    assert doc["accuracy"]["mean"] == pytest.approx(mean)
    assert doc["accuracy"]["ci95"] == pytest.approx(ci)


def test_written_file_is_json_equal_to_the_returned_doc(produced):
    doc, path, out, _ = produced
    assert path is not None
    assert path.parent == out
    assert path.suffix == ".json"
    assert json.loads(path.read_text()) == doc
    assert read_result(path) == doc


def test_no_temporary_files_are_left(produced):
    _, path, out, _ = produced
    assert sorted(p.name for p in out.iterdir()) == [path.name]


# -- validate -----------------------------------------------------------------------------------
def _delete(*keys):
    def mutate(d):
        for key in keys[:-1]:
            d = d[key]
        del d[keys[-1]]
    return mutate


def _set(value, *keys):
    def mutate(d):
        for key in keys[:-1]:
            d = d[key]
        d[keys[-1]] = value
    return mutate


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_delete("protocol", "episodes_sha"), "protocol.episodes_sha"),
        (_delete("fit"), "fit"),
        (_delete("schema_version"), "schema_version"),
        (_delete("provenance", "timestamp"), "provenance.timestamp"),
        (_set("0.5", "accuracy", "mean"), "accuracy.mean"),
        (_set(True, "accuracy", "mean"), "accuracy.mean"),
        (_set(True, "protocol", "ways"), "protocol.ways"),
        (_set(5.0, "protocol", "ways"), "protocol.ways"),
        (_set(True, "fit", "iterations"), "fit.iterations"),
        (_set(1, "method", "transductive"), "method.transductive"),
        (_set(None, "dataset", "name"), "dataset.name"),
        (_set([], "method"), "method"),
        (_set("yes", "provenance", "git_dirty"), "provenance.git_dirty"),
        (lambda d: d["accuracy"]["per_episode"].append(0.5), "accuracy.per_episode"),
        (lambda d: d["accuracy"]["per_episode"].pop(), "accuracy.per_episode"),
        (lambda d: d["accuracy"]["by_step"].append({"step": 9, "mean": 0.5, "ci95": 0.0}), "accuracy.by_step"),
        (_set(SCHEMA_VERSION + 1, "schema_version"), "schema_version"),
    ],
)
def test_validate_names_the_bad_field(doc, mutate, field):
    mutate(doc)
    problems = validate(doc)
    assert problems, "the mutated record should not validate"
    assert any(p.startswith(f"{field}:") for p in problems), problems


def test_validate_allows_nulls_where_the_schema_does(doc):
    doc["provenance"]["git_commit"] = None
    doc["provenance"]["git_dirty"] = None
    doc["accuracy"]["mean"] = 1  # an int is a number
    assert validate(doc) == []


def test_validate_reports_every_problem(doc):
    del doc["fit"]["seconds"]
    doc["budget"]["iterations"] = "5"
    problems = validate(doc)
    assert any(p.startswith("fit.seconds:") for p in problems)
    assert any(p.startswith("budget.iterations:") for p in problems)


@pytest.mark.parametrize("value", [None, [], "result", 3])
def test_validate_rejects_a_non_object(value):
    assert validate(value) == ["result: expected an object"]


# -- write_result / read_result -----------------------------------------------------------------
def test_write_result_refuses_an_invalid_doc(doc, tmp_path):
    del doc["accuracy"]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="accuracy: missing"):
        write_result(doc, out)
    assert not out.exists() or list(out.iterdir()) == []


def test_writing_the_same_doc_twice_gives_two_files(doc, tmp_path):
    out = tmp_path / "nested" / "out"
    first = write_result(doc, out)
    second = write_result(doc, out)
    third = write_result(doc, out)
    assert len({first, second, third}) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted([first.name, second.name, third.name])
    for path in (first, second, third):
        assert path.suffix == ".json"
        assert read_result(path) == doc
    assert first.name.startswith("synthetic_5w1s_protonet_seed0_")


def test_read_result_rejects_a_file_that_is_not_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="cannot read result"):
        read_result(bad)


def test_read_result_rejects_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="cannot read result"):
        read_result(tmp_path / "absent.json")


def test_read_result_names_the_schema_problem(doc, tmp_path):
    doc["protocol"]["shots"] = "one"
    bad = tmp_path / "invalid.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(UserError) as info:
        read_result(bad)
    assert "not a valid mtbench result" in str(info.value)
    assert "protocol.shots" in str(info.value)


# -- determinism of a run -----------------------------------------------------------------------
def test_a_second_identical_run_gives_the_same_scores(produced, one_thread):
    first, _, _, tmp = produced
    second, path = run(tiny_spec(tmp, None))
    assert path is None
    assert validate(second) == []
    assert second["protocol"]["episodes_sha"] == first["protocol"]["episodes_sha"]
    assert second["accuracy"]["per_episode"] == first["accuracy"]["per_episode"]
    assert second["accuracy"]["mean"] == first["accuracy"]["mean"]
    assert second["method"]["hparams"] == first["method"]["hparams"]


# -- metrics ------------------------------------------------------------------------------------
def test_mean_ci95_by_hand():
    mean, ci = mean_ci95([0, 1, 1, 0])
    # sample variance: 4 * 0.25 / 3 = 1/3; half-width 1.96 * sqrt(1/3 / 4)
    assert mean == 0.5
    assert ci == pytest.approx(1.959963984540054 * math.sqrt((1 / 3) / 4))
    assert ci == pytest.approx(0.565792, abs=1e-6)

    mean, ci = mean_ci95([0.2, 0.4, 0.9])
    m = 0.5
    var = ((0.2 - m) ** 2 + (0.4 - m) ** 2 + (0.9 - m) ** 2) / 2
    assert mean == pytest.approx(m)
    assert ci == pytest.approx(Z95 * math.sqrt(var / 3))


def test_mean_ci95_edge_cases():
    assert mean_ci95([0.7]) == (0.7, 0.0)
    assert mean_ci95([0.25, 0.25, 0.25]) == (0.25, 0.0)
    with pytest.raises(ValueError):
        mean_ci95([])
    assert Z95 == pytest.approx(1.96, abs=1e-3)
