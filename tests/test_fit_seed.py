"""``--fit-seed``: the fit's own seed, apart from the episodes' ``--seed``.

Two fit seeds are two fits scored on the same episodes; the same fit seed gives the same numbers; ``--fit-seed
0`` is the generator every run had before the option (``fit_seed(0)``, which the committed rows of ``--seed 0``
were fitted from); the result records it (``fit.seed``, schema 4, in the file name when not 0) and a version-3
record gets it from ``protocol.seed``; ``reproduce``, ``sweep`` and ``official`` carry it. Tiny runs on the
generated ``synthetic`` data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from click.testing import CliRunner

from mtbench.board.labels import label
from mtbench.board.leaderboard import Entry, Row, rows
from mtbench.board.official import load_plan, missing, missing_runs
from mtbench.board.reproduce import spec_of
from mtbench.board.sweep import existing, from_file, grid, matches
from mtbench.cli import main
from mtbench.data.episodes import EpisodeSpec
from mtbench.methods import METHODS
from mtbench.results import SCHEMA_VERSION, read_result, result_filename, upgrade, validate
from mtbench.results.layout import folder
from mtbench.run import stages
from mtbench.run.runner import RunSpec, fit_seed, run
from support import init_doc, put_result, result_doc

#: ``fit_seed(0)`` as every run before ``--fit-seed`` seeded its fit with for ``--seed 0`` (the committed rows)
FIT_SEED_0 = 17092034979513180
TINY = ["--dataset", "synthetic", "--ways", "3", "--shots", "1", "--queries", "2", "--episodes", "4",
        "--budget", "2", "--device", "cpu", "--no-progress"]


def tiny(tmp: Path, **fields) -> RunSpec:
    return RunSpec(method="protonet", dataset="synthetic", episodes=EpisodeSpec(3, 1, 2, 4, seed=0), budget="2",
                   device="cpu", data_root=str(tmp / "data"), out=None, progress=False, **fields)


def weights(method) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, m in method.modules().items() for k, v in m.state_dict().items()}


def test_two_fit_seeds_are_two_fits_on_the_same_episodes_and_one_fit_seed_is_one(tmp_path, one_thread):
    r = stages.resolve(tiny(tmp_path))
    d = stages.load(r)  # the episodes: loaded once, scored by every fit below
    runs = {}
    for name, seed in (("a", 0), ("b", 1), ("again", 0)):
        seeded = dataclasses.replace(r, spec=dataclasses.replace(r.spec, fit_seed=seed))
        f = stages.fit(seeded, d)
        runs[name] = (weights(f.method), stages.record(seeded, d, f, stages.score(seeded, d, f)))
    (wa, a), (wb, b), (wc, again) = runs["a"], runs["b"], runs["again"]
    assert a["protocol"]["episodes_sha"] == b["protocol"]["episodes_sha"] == again["protocol"]["episodes_sha"]
    assert [a["fit"]["seed"], b["fit"]["seed"], again["fit"]["seed"]] == [0, 1, 0]
    assert a["protocol"]["seed"] == b["protocol"]["seed"] == 0  # the episodes' seed is not the fit's
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # another initialisation and other tasks
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    assert again["accuracy"]["per_episode"] == a["accuracy"]["per_episode"]
    assert validate(a) == [] and validate(b) == []


class Spy(METHODS.get("protonet")):  # type: ignore[misc]
    """ProtoNet that remembers the seed of the generator it was built with."""

    seeds: ClassVar[list[int]] = []

    def __init__(self, hparams, in_shape, generator, device) -> None:
        Spy.seeds.append(generator.initial_seed())
        super().__init__(hparams, in_shape, generator, device)


@pytest.mark.parametrize(("episodes_seed", "given", "expected"), [
    (0, 0, FIT_SEED_0),          # the default: exactly the generator of `--seed 0` before --fit-seed
    (3, 0, FIT_SEED_0),          # --seed moves the episodes only
    (0, 2, fit_seed(2)),
])
def test_the_fit_generator_is_seeded_from_the_fit_seed_alone(tmp_path, one_thread, episodes_seed, given, expected):
    assert fit_seed(0) == FIT_SEED_0  # the formula of the committed rows' fits
    Spy.seeds.clear()
    spec = dataclasses.replace(tiny(tmp_path, fit_seed=given), episodes=EpisodeSpec(3, 1, 2, 4, seed=episodes_seed),
                               budget="0")
    r = stages.resolve(spec, method_cls=Spy)
    stages.fit(r, stages.load(r))
    assert Spy.seeds == [expected]


def test_the_result_records_the_fit_seed_names_its_file_and_reproduce_uses_it(tmp_path, one_thread):
    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["run", "--method", "protonet", *TINY, "--fit-seed", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    [path] = out.glob("*.json")
    assert "_seed0_fit2_" in path.name and "fit seed 2" in result.output
    doc = read_result(path)
    assert doc["fit"]["seed"] == 2 and doc["schema_version"] == SCHEMA_VERSION == 6
    assert spec_of(doc, None, "cpu").fit_seed == 2
    assert "_fit" not in result_filename(result_doc("protonet", [0.5]))  # fit seed 0: the names runs always had
    assert "_seed0_fit3_2026" in result_filename(result_doc("protonet", [0.5], fit_seed=3))


def test_a_version_3_record_gets_the_fit_seed_that_drove_its_fit():
    old = result_doc("protonet", [0.5, 1.0])
    old["schema_version"] = 3
    old["protocol"]["seed"] = 7  # before --fit-seed, --seed 7 fitted from fit_seed(7): that is --fit-seed 7
    del old["fit"]["seed"]
    new = upgrade(old)
    assert new["schema_version"] == SCHEMA_VERSION and new["fit"]["seed"] == 7 and validate(new) == []
    assert "seed" not in old["fit"]  # the argument is left as it was
    assert {k: v for k, v in new.items() if k not in ("fit", "schema_version")} == \
        {k: v for k, v in old.items() if k not in ("fit", "schema_version")}


def test_a_run_from_a_checkpoint_records_its_fit_seed_and_takes_it_unless_told_otherwise(tmp_path, one_thread):
    saved = tmp_path / "fit2.pt"
    first = CliRunner().invoke(main, ["run", "--method", "protonet", *TINY, "--fit-seed", "2", "--save", str(saved),
                                      "--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output

    def from_checkpoint(out: str, *args: str, checkpoint: Path = saved) -> dict:
        result = CliRunner().invoke(main, ["run", "--method", "protonet", *TINY[:-4], "0", "--device", "cpu",
                                           "--no-progress", "--init", str(checkpoint), *args, "--out",
                                           str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        [path] = (tmp_path / out).glob("*.json")
        return read_result(path) | {"output": result.output, "name": path.name}

    inherited = from_checkpoint("inherited")  # the second stage of seed 2 of a pipeline is seed 2
    assert inherited["init"]["fit_seed"] == 2 and inherited["fit"]["seed"] == 2 and "_fit2_" in inherited["name"]
    assert inherited["init"]["method_version"] == METHODS.get("protonet").version
    assert "it, fit seed 2)" in inherited["output"]
    told = from_checkpoint("told", "--fit-seed", "0")
    assert told["init"]["fit_seed"] == 2 and told["fit"]["seed"] == 0
    blob = torch.load(saved, weights_only=True)
    del blob["fit_seed"], blob["method_version"]  # a checkpoint saved before it kept its fit seed (and version)
    torch.save(blob, tmp_path / "old.pt")
    old = from_checkpoint("old", checkpoint=tmp_path / "old.pt")
    assert old["init"]["fit_seed"] is None and old["fit"]["seed"] == 0 and old["init"]["method_version"] is None
    # a checkpoint whose own fit started from one saved before: that stage's seed is unknown, and says so
    blob["init"] = {k: v for k, v in init_doc().items() if k not in ("fit_seed", "method_version")}
    torch.save(blob, tmp_path / "chained.pt")
    chained = from_checkpoint("chained", checkpoint=tmp_path / "chained.pt")
    assert chained["init"]["init"]["fit_seed"] is None and chained["init"]["init"]["method_version"] is None
    assert all(validate({k: v for k, v in d.items() if k not in ("output", "name")}) == []
               for d in (inherited, old, chained))


def test_results_from_checkpoints_of_other_fit_seeds_are_seeds_of_one_row_and_old_ones_read_as_unknown():
    # seed 0's checkpoint was saved before Reptile had eval_batch (later_hparams: it ran as eval_batch=0)
    docs = [result_doc("reptile-transductive", [0.5, 1.0], fit_seed=s, init=init_doc(
        "reptile", fit_seed=s, sha256=f"{s}" * 64, hparams={"eval_batch": 0} if s else {})) for s in (0, 1, 2)]
    [row] = rows([Entry(Path(f"{i}.json"), d) for i, d in enumerate(docs)])
    assert row.seeds == [0, 1, 2]
    other = result_doc("reptile-transductive", [0.5, 1.0], fit_seed=3,
                       init=init_doc("reptile", fit_seed=3, hparams={"eval_batch": 5}))
    assert len(rows([Entry(Path(f"{i}.json"), d) for i, d in enumerate([*docs, other])])) == 2
    old = result_doc("reptile-transductive", [0.5, 1.0], init=init_doc("reptile", init=init_doc("reptile")))
    old["schema_version"] = 4
    del old["init"]["fit_seed"], old["init"]["init"]["fit_seed"]
    new = upgrade(old)
    assert new["schema_version"] == SCHEMA_VERSION and validate(new) == []
    assert new["init"]["fit_seed"] is None and new["init"]["init"]["fit_seed"] is None
    assert "fit_seed" not in old["init"]  # the argument is left as it was


def test_a_first_stage_of_another_or_unrecorded_method_version_is_another_row_and_says_so():
    installed = METHODS.get("reptile").version
    known = [result_doc("reptile-transductive", [0.5, 1.0], fit_seed=s,
                       init=init_doc("reptile", fit_seed=s, sha256=f"{s}" * 64)) for s in (0, 1)]
    [row] = rows([Entry(Path(f"{i}.json"), d) for i, d in enumerate(known)])
    assert row.seeds == [0, 1] and label(known[0]) == "reptile → reptile-transductive"
    older = result_doc("reptile-transductive", [0.5, 1.0], fit_seed=2, init=init_doc("reptile", fit_seed=2,
                                                                                     method_version="0"))
    assert label(older) == "reptile v0 → reptile-transductive" and installed != "0"
    # a version-5 result did not record its checkpoint's method version: unknown, never joined with a known one
    v5 = result_doc("reptile-transductive", [0.5, 1.0], fit_seed=3, init=init_doc("reptile", fit_seed=3,
                                                                                  init=init_doc("reptile")))
    v5["schema_version"] = 5
    del v5["init"]["method_version"], v5["init"]["init"]["method_version"]
    unknown = upgrade(v5)
    assert unknown["schema_version"] == SCHEMA_VERSION and validate(unknown) == []
    assert unknown["init"]["method_version"] is None and unknown["init"]["init"]["method_version"] is None
    assert label(unknown) == "reptile → reptile-transductive" and "method_version" not in v5["init"]
    split = rows([Entry(Path(f"{i}.json"), d) for i, d in enumerate([*known, older, unknown])])
    assert sorted(r.seeds for r in split) == [[0, 1], [2], [3]]


@pytest.mark.parametrize(("args", "says"), [
    (["run", "--method", "protonet", *TINY, "--fit-seed", "-1"], "--fit-seed must be a whole number ≥ 0, got -1"),
    (["sweep", "--method", "protonet", *TINY, "--fit-seed", "0,-1", "--dry-run"],
     "--fit-seed -1: not a whole number ≥ 0"),
    (["official", "--fit-seeds", "0,x", "--dry-run"], "--fit-seeds x: not a whole number ≥ 0"),
    (["official", "--dry-run", "--", "--fit-seed", "1"], "--fit-seed after --: the official plan sets"),
    (["official", "--dry-run", "--", "--fit-minutes", "5"], "--fit-minutes 5 after --: mtbench official runs whole rows"),
    (["run", "--method", "protonet", *TINY, "--fit-minutes", "0"], "--fit-minutes 0.0: give a number of minutes > 0"),
    (["run", "--method", "scratch", *TINY, "--fit-seed", "1"],
     "--fit-seed 1: no fit seed changes scratch's numbers (it fits nothing"),
])
def test_a_bad_fit_seed_or_fit_time_limit_is_a_one_line_error(tmp_path, args, says):
    result = CliRunner().invoke(main, [*args[:1], "--out" if args[0] != "official" else "--leaderboards",
                                       str(tmp_path / "out"), *args[1:]])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    if args[0] == "sweep":  # a sweep names all its bad values at once, one line each, under a heading line
        assert lines[0].startswith("mtbench: error: 1 problem(s) in the sweep") and says in lines[1], result.output
    else:
        assert len(lines) == 1 and lines[0].startswith("mtbench: error: ") and says in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_the_sweep_grid_has_a_fit_seed_axis_and_its_dry_run_knows_each(tmp_path, one_thread):
    trials = grid("protonet", "synthetic", out=tmp_path, ways="3", queries="2", episodes="4", budgets="2",
                  seeds="0,1", fit_seeds="0,2")
    assert [t.summary for t in trials] == ["protonet synthetic/3w1s seed 0 budget 2",
                                           "protonet synthetic/3w1s seed 0 fit 2 budget 2",
                                           "protonet synthetic/3w1s seed 1 budget 2",
                                           "protonet synthetic/3w1s seed 1 fit 2 budget 2"]
    assert [t.spec.fit_seed for t in trials] == [0, 2, 0, 2]
    assert "--fit-seed" not in trials[0].spec.command and " --seed 0 --fit-seed 2 --budget 2 " in trials[1].spec.command
    assert not matches(trials[1].key, trials[0].key) and matches(trials[1].key, trials[0].key, any_seed=True)

    run(dataclasses.replace(trials[0].spec, device="cpu", progress=False, data_root=str(tmp_path / "data")))
    assert existing(trials[0]) is not None and existing(trials[1]) is None  # a result counts for its fit seed only
    result = CliRunner().invoke(main, ["sweep", "--method", "protonet", *TINY, "--fit-seed", "0,2", "--out",
                                       str(tmp_path), "--data-root", str(tmp_path / "data"), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("[1/2] protonet synthetic/3w1s seed 0 budget 2: skip, result exists (")
    assert lines[1].startswith("[2/2] protonet synthetic/3w1s seed 0 fit 2 budget 2: run, expected ")
    assert "--fit-seed 2 --budget 2" in lines[2] and lines[-1].startswith("1 of 2 trial(s) to run")

    plan = tmp_path / "sweep.toml"  # a sweep file: every entry once per fit seed
    plan.write_text('budget = "2"\n[[settings]]\ndataset = "synthetic"\nways = 3\nepisodes = 4\n'
                    'entries = [{method = "protonet"}]\n')
    assert [t.spec.fit_seed for t in from_file(plan, tmp_path, fit_seeds=[0, 1, 2])] == [0, 1, 2]


def test_official_fills_each_row_once_per_fit_seed(tmp_path):
    chosen = load_plan().select("omniglot", "20w1s")
    where = folder(tmp_path, "omniglot", "20w1s")
    put_result(where, result_doc("protonet", [0.5, 0.75], dataset="omniglot", ways=20, queries=1))
    put_result(where, result_doc("matchingnet", [0.5, 0.75], dataset="omniglot", ways=20, queries=1, fit_seed=1))
    rows = [(e.label, f) for _, e, f in missing_runs(tmp_path, chosen, (0, 1))]
    labels = [e.label for e in chosen[0].entries]
    # scratch fits nothing: its fit seed 0 stands for every fit seed
    assert rows == [(n, 0) for n in labels if n != "protonet"] + [(n, 1) for n in labels
                                                                   if n not in ("matchingnet", "scratch")]
    assert [e.label for _, e in missing(tmp_path, chosen)] == [n for n in labels if n != "protonet"]
    result = CliRunner().invoke(main, ["official", "--leaderboards", str(tmp_path), "--dataset", "omniglot",
                                       "--setting", "20w1s", "--fit-seeds", "0,1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"{len(rows)} row(s) missing in omniglot/20w1s at fit seeds 0, 1" in result.output
    assert "] protonet on omniglot/20w1s fit seed 1: " in result.output
    assert "--ways 20 --shots 1 --fit-seed 1 --budget quick" in result.output
    assert "(scratch: fit seed 0 alone, as no fit seed changes its numbers)" in result.output
    # asked for fit seeds 1 and 2 alone, scratch is still run once, at fit seed 0, in the first seed's turn
    assert [(e.label, f) for _, e, f in missing_runs(tmp_path, chosen, (1, 2)) if e.label == "scratch"] == \
        [("scratch", 0)]


def test_a_method_no_fit_seed_changes_is_planned_once_and_truly_ignores_the_fit_generator(tmp_path, one_thread):
    """scratch (``fit_seeded = False``) draws each episode's network from the episode: two instances built from
    differently seeded fit generators score an episode alike; a grid over fit seeds runs it at fit seed 0 alone."""
    cls = METHODS.get("scratch")
    assert not cls.fit_seeded and all(METHODS.get(n).fit_seeded for n in ("protonet", "maml", "finetune"))
    x, y = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5)), torch.arange(3)
    logits = []
    for seed in (1, 2):
        method = cls(cls.Hparams(steps=3), (1, 28, 28), torch.Generator().manual_seed(seed), torch.device("cpu"))
        logits.append([predict(x) for predict in method.adapt(x, y, 3)])
    assert all(torch.equal(a, b) for a, b in zip(*logits))
    trials = grid("protonet,scratch", "synthetic", out=tmp_path, ways="3", queries="2", episodes="4", budgets="2",
                  fit_seeds="0,2")
    assert [(t.spec.method, t.spec.fit_seed) for t in trials] == [("protonet", 0), ("protonet", 2), ("scratch", 0)]
    assert "--fit-seed" not in trials[2].spec.command
    # its leaderboard row is one computation, not a seed of many
    assert Row([Entry(Path("s.json"), result_doc("scratch", [0.5, 1.0]))]).shape() == "2 episodes (nothing fitted)"
    assert Row([Entry(Path("p.json"), result_doc("protonet", [0.5, 1.0]))]).shape() == \
        "1 seed × 2 episodes (single-seed)"
    plan = tmp_path / "sweep.toml"  # a sweep file's entries alike
    plan.write_text('budget = "2"\n[[settings]]\ndataset = "synthetic"\nways = 3\nepisodes = 4\n'
                    'entries = [{method = "scratch"}, {method = "protonet"}]\n')
    assert [(t.spec.method, t.spec.fit_seed) for t in from_file(plan, tmp_path, fit_seeds=[1, 2])] == [
        ("scratch", 0), ("protonet", 1), ("protonet", 2)]


def test_the_index_sums_what_the_official_rows_cost_at_first_and_now(tmp_path):
    """The plan's cost before and after a change: each row's oldest result (at any version of its method) against
    the one the matrix shows, over the rows whose both results ran on the CPU; a GPU row is left out."""
    from mtbench.board.official import first_results, load_plan
    from mtbench.report.boards import overview

    where = folder(tmp_path, "omniglot", "20w1s")

    def doc(method, stamp, fit, evaluation, version=None, device_type="cpu"):
        d = result_doc(method, [0.5, 0.75], dataset="omniglot", ways=20, queries=1, stamp=stamp)
        d["fit"]["seconds"], d["evaluation"]["seconds"] = fit, evaluation
        d["provenance"]["device_type"] = device_type
        if version:
            d["method"]["version"] = version  # older code: labelled "protonet v0", still the row's first result
        return d

    old = put_result(where, doc("protonet", "2026-01-01T00:00:00+00:00", 3600.0, 1800.0, version="0"), "a")
    put_result(where, doc("protonet", "2026-02-01T00:00:00+00:00", 360.0, 180.0), "b")
    put_result(where, doc("matchingnet", "2026-01-05T00:00:00+00:00", 720.0, 360.0), "c")
    put_result(where, doc("finetune", "2026-01-05T00:00:00+00:00", 7200.0, 7200.0, device_type="cuda"), "d")
    assert first_results(where, load_plan().select("omniglot", "20w1s")[0])["protonet"] == old
    blocks = overview(tmp_path)
    text = " ".join(str(b) for b in blocks)
    assert "The 2 rows of the matrix that ran on the CPU (1 of them rerun since their first result" in text
    table = next(b.frame for b in blocks if getattr(b, "frame", None) is not None and "fit (h)" in b.frame)
    assert table.to_dict("records") == [
        {"results": "each row's first result", "fit (h)": "1.20", "evaluation (h)": "0.60", "total (h)": "1.80"},
        {"results": "the results shown above", "fit (h)": "0.30", "evaluation (h)": "0.15", "total (h)": "0.45"}]


def test_the_index_matrix_joins_a_rows_fit_seeds_across_the_cpus_that_ran_them(tmp_path):
    """The newest result of a label is shown as its row over all its fit seeds, those of another CPU too: the
    matrix shows accuracy, which does not depend on the CPU."""
    from mtbench.report.boards import overview

    where = folder(tmp_path, "omniglot", "20w1s")
    for seed, cpu, stamp in ((0, "CPU AMD EPYC (1 threads)", "01"), (1, "CPU AMD EPYC (1 threads)", "02"),
                             (2, "CPU Intel(R) Xeon(R) Processor (1 threads)", "03")):
        put_result(where, result_doc("protonet", [0.5, 0.75], dataset="omniglot", ways=20, queries=1, fit_seed=seed,
                                     device=cpu, stamp=f"2026-01-{stamp}T00:00:00+00:00"), f"protonet{seed}")
    matrix = next(b.frame for b in overview(tmp_path) if getattr(b, "frame", None) is not None
                  and "method" in b.frame)
    cell = matrix.set_index("method").loc["protonet", "omniglot 20w1s"]
    assert cell.endswith("(3 seeds)"), cell  # the newest, Intel, result alone would be a single fit
