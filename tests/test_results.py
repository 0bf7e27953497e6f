"""Tests for mtbench.results (schema, validation, upgrading, atomic writing, reading) and mtbench.core.metrics."""

from __future__ import annotations

import copy
import json
import math
import typing
from pathlib import Path

import pytest

from mtbench.data.episodes import EpisodeSpec
from mtbench.core.errors import UserError
from mtbench.core.metrics import Z95, mean_ci95
from mtbench.results import Result, SCHEMA_VERSION, fields_table, read_result, upgrade, validate, write_result
from mtbench.run.runner import RunSpec, run
from support import result_doc

ROOT = Path(__file__).resolve().parent.parent


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
    assert set(typing.get_type_hints(Result)) == set(doc)
    assert doc["method"]["variant"] == ""
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
        (_delete("method", "variant"), "method.variant"),
        (_delete("dataset", "notes"), "dataset.notes"),
        (_delete("init"), "init"),
        (_delete("submission"), "submission"),
        (_delete("provenance", "precision"), "provenance.precision"),
        (_delete("evaluation", "batched_episodes"), "evaluation.batched_episodes"),
        (_delete("accuracy", "by_step", 0, "ci95"), "accuracy.by_step[0].ci95"),
        (_set(True, "accuracy", "by_step", 0, "step"), "accuracy.by_step[0].step"),
        (_set(True, "accuracy", "per_episode", 3), "accuracy.per_episode[3]"),
        (_set("0.5", "accuracy", "per_episode", 0), "accuracy.per_episode[0]"),
        (_set(["ok", 1], "fit", "notes"), "fit.notes[1]"),
        (_set(True, "evaluation", "batched_episodes"), "evaluation.batched_episodes"),
        (_set(1, "provenance", "compile"), "provenance.compile"),
        (_set("bogus", "protocol", "kind"), "protocol.kind"),
        (_set("fp16", "provenance", "precision"), "provenance.precision"),
        (_set(10 ** 6, "fit", "iterations"), "fit.iterations"),
        (_set(1, "provenance", "malloc"), "provenance.malloc"),
        (_set({"name": "x"}, "source"), "source.version"),
        (_set({"ways": 5, "shots": 1, "queries": 15, "episodes": True, "seed": 0}, "protocol", "fit_episodes"),
         "protocol.fit_episodes.episodes"),
        (_set(1, "method", "extra"), "method.extra"),
        (_set(1, "extra"), "extra"),
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


# -- the schema: one definition -----------------------------------------------------------------
INIT = {"path": "a.pt", "sha256": "b" * 64, "recalibrated_batchnorm": False, "method": "protonet",
        "method_version": "1", "hparams": {},
        "dataset": "synthetic", "fit_split": "train", "budget": "quick", "iterations": 10, "fit_seconds": 1.5, "fit_seed": 0,
        "init": None, "git_commit": None}


def test_result_doc_is_a_current_valid_result():
    assert validate(result_doc("x", [0.5, 1.0])) == []
    assert result_doc("x", [0.5])["schema_version"] == SCHEMA_VERSION == 6


def test_validate_checks_nested_sections_at_any_depth():
    nested = {**INIT, "init": {**INIT, "iterations": True}}
    assert validate(result_doc("x", [0.5], init={**INIT, "init": {**INIT}})) == []
    problems = validate(result_doc("x", [0.5], init=nested))
    assert problems == ["init.init.iterations: expected int, got bool"]
    problems = validate(result_doc("x", [0.5], init={**INIT, "init": {"path": "a.pt"}}))
    assert "init.init.sha256: missing" in problems
    sub = {"source": "m.py", "class": "M", "source_sha256": 7}
    assert validate(result_doc("x", [0.5], submission=sub)) == ["submission.source_sha256: expected str, got int"]


def test_validate_takes_either_protocol_kind():
    doc = result_doc("x", [0.5, 0.5])
    doc["protocol"].update(kind="transfer", train_images=10, test_images=10, trials=2)
    assert validate(doc) == []
    del doc["protocol"]["trials"]
    assert validate(doc) == ["protocol.trials: missing"]
    doc = result_doc("x", [0.5, 0.5])
    doc["protocol"]["trials"] = 2  # an episodes protocol has no trials
    assert validate(doc) == ["protocol.trials: not a field of schema_version 6"]


def test_validate_takes_an_int_for_a_float_but_never_a_bool():
    doc = result_doc("x", [0, 1])
    doc["fit"]["seconds"] = 3
    assert validate(doc) == []
    doc["fit"]["seconds"] = False
    assert validate(doc) == ["fit.seconds: expected float, got bool"]


def _each_typeddict(td, seen):
    seen.add(td)
    for annotated in typing.get_type_hints(td, include_extras=True).values():
        yield td, annotated
        kind = typing.get_args(annotated)[0]
        for inner in (kind, *typing.get_args(kind), *[a for k in typing.get_args(kind) for a in typing.get_args(k)]):
            if isinstance(inner, type) and hasattr(inner, "__required_keys__") and inner not in seen:
                yield from _each_typeddict(inner, seen)


def test_every_field_is_required_and_says_what_it_means():
    fields = list(_each_typeddict(Result, set()))
    assert len(fields) > 80
    for td, annotated in fields:
        assert td.__optional_keys__ == frozenset(), td
        assert typing.get_origin(annotated) is typing.Annotated, (td, annotated)
        meaning = typing.get_args(annotated)[1]
        assert isinstance(meaning, str) and meaning.strip(), (td, annotated)


def test_readme_table_is_the_schema():
    text = (ROOT / "README.md").read_text()
    table = fields_table()
    assert "### Result fields (`schema_version` 6)" in text
    assert f"\n{table}\n" in text
    rows = [line.split("`")[1] for line in table.splitlines()[2:]]
    assert len(rows) == len(set(rows))
    assert {"method.variant", "protocol.kind", "protocol.trials", "accuracy.by_step[].step", "init.init",
            "submission.class", "provenance.compile"} <= set(rows)


# -- upgrade: version 1 -> 2 ----------------------------------------------------------------------
#: the fields that version-1 records written before them lack
V1_LATER = [("method", "variant"), ("init",), ("source",), ("submission",), ("dataset", "unlabelled_split"),
            ("dataset", "support_split"), ("dataset", "notes"), ("protocol", "kind"), ("protocol", "support_from"),
            ("protocol", "queries_from"), ("protocol", "fit_episodes"), ("fit", "notes"),
            ("evaluation", "batched_episodes"), ("provenance", "precision"), ("provenance", "compile"),
            ("fit", "seed")]


def oldest_v1(method: str = "protonet", **kw) -> dict:
    """A version-1 record as the first ones were written: none of the later fields."""
    doc = result_doc(method, [0.5, 0.75, 1.0], by_step=[0.25], **kw)
    doc["schema_version"] = 1
    for keys in V1_LATER:
        _delete(*keys)(doc)
    return doc


def test_upgrade_fills_every_field_an_old_record_lacks_with_what_it_meant():
    old = oldest_v1()
    before = copy.deepcopy(old)
    new = upgrade(old)
    assert old == before, "upgrade must not modify its argument"
    assert validate(new) == []
    assert new == result_doc("protonet", [0.5, 0.75, 1.0], by_step=[0.25])  # null, [], fp32, episodes...
    assert validate(old) != []


def test_upgrade_keeps_what_a_v1_record_has():
    old = result_doc("protonet", [0.5, 1.0], init=INIT, submission={"source": "m.py", "class": "M",
                                                                     "source_sha256": "c" * 64})
    old["schema_version"] = 1
    del old["method"]["variant"]
    old["provenance"].update(precision="bf16", compile=True)
    old["protocol"].update(support_from="train")
    new = upgrade(old)
    assert validate(new) == []
    assert new["init"] == INIT and new["submission"]["class"] == "M"
    assert new["provenance"]["precision"] == "bf16" and new["provenance"]["compile"] is True
    assert new["protocol"]["support_from"] == "train" and new["method"]["variant"] == ""


def test_upgrade_asks_the_registered_method_for_its_variant():
    fomaml = oldest_v1("maml")
    fomaml["method"]["hparams"] = {"first_order": True}
    assert upgrade(fomaml)["method"]["variant"] == "1st order"
    assert upgrade(oldest_v1("maml"))["method"]["variant"] == ""
    assert upgrade(oldest_v1("not-registered"))["method"]["variant"] == ""


def test_upgrade_of_a_current_record_is_an_equal_copy():
    doc = result_doc("x", [0.5])
    new = upgrade(doc)
    assert new == doc and new is not doc and new["method"] is not doc["method"]


def test_read_result_reads_a_v1_file_through_upgrade_with_the_same_numbers(tmp_path):
    old = oldest_v1()
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    doc = read_result(path)
    assert doc["schema_version"] == SCHEMA_VERSION and validate(doc) == []
    assert doc["accuracy"] == old["accuracy"] and doc["protocol"]["episodes_sha"] == old["protocol"]["episodes_sha"]
    assert json.loads(path.read_text()) == old  # the file is not rewritten


def test_read_result_refuses_a_newer_version_on_one_line(tmp_path):
    doc = result_doc("x", [0.5], schema_version=SCHEMA_VERSION + 1)
    path = tmp_path / "future.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError) as info:
        read_result(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and f"schema_version {SCHEMA_VERSION + 1}" in message and "upgrade mtbench" in message


def committed_results() -> list[Path]:
    return sorted(p for p in (ROOT / "leaderboards").rglob("*.json")
                  if "throughput" not in p.parts and "reproduction" not in p.parts)


def test_every_committed_result_reads_through_upgrade_and_validates():
    files = committed_results()
    assert len(files) >= 40
    for path in files:
        raw = json.loads(path.read_text())
        # as mtbench run wrote it (version 1, version 4 or the current version for the fits added since, e.g. other fit
        # seeds),
        # or rewritten by `mtbench reproduce --record` (version 3 then), with its record
        assert raw["schema_version"] in (1, 4, 5, SCHEMA_VERSION) or (raw["schema_version"] == 3 and raw["reproduced"]), path
        doc = read_result(path)
        assert validate(doc) == [], path
        assert doc["accuracy"] == raw["accuracy"] and doc["protocol"]["episodes_sha"] == raw["protocol"]["episodes_sha"]
        assert doc == upgrade(raw)
