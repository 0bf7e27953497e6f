"""Leaderboard rows over training seeds: the seeds × episodes estimator of :mod:`mtbench.core.metrics` on
numbers with a known answer (hand-computed mean squares, Student t values, simulated variance components),
and rows of generated results that differ only by ``fit.seed`` on ``leaderboard``, ``compare`` and the report."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mtbench.board.leaderboard import Entry, fit_seed, frame, group, paired
from mtbench.cli import main
from mtbench.core.metrics import (Z95, Interval, mean_ci95, paired_seed_difference, p_text, satterthwaite,
                                  seed_mean_ci95, seed_table, t_cdf, t_quantile)
from mtbench.report.build import build
from support import put_result, result_doc

T1, T2 = 12.706204736174707, 4.302652729749464  # 97.5 % quantiles of Student's t with 1 and 2 df (tables)


# -- the estimator -----------------------------------------------------------------------------------
def test_student_t_against_tables_and_closed_forms():
    for df, q in [(1, T1), (2, T2), (10, 2.228138851986274), (30, 2.042272456301238)]:
        assert t_quantile(0.975, df) == pytest.approx(q, rel=1e-9)
    assert t_quantile(0.975, math.inf) == pytest.approx(Z95, rel=1e-12)
    assert t_quantile(0.025, 2) == pytest.approx(-T2, rel=1e-9)
    for t in (-3.0, 0.4, 7.5):  # Cauchy (1 df) and 2 df have closed forms
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert satterthwaite([(1.0, 2), (1.0, 2)]) == pytest.approx(4.0)  # Welch: two equal parts add their df


def test_two_way_mean_squares_of_a_hand_computed_table():
    # grand mean 3; seed means 4, 2; episode means 3, 0, 6; residuals 0 -1 1 / 0 1 -1
    t = seed_table([[4, 0, 8], [2, 0, 4]])
    assert (t.seeds, t.episodes, t.mean, t.episode_means) == (2, 3, 3.0, (3.0, 0.0, 6.0))
    assert (t.ms_seed, t.ms_episode, t.ms_resid) == pytest.approx((3 * 2 / 1, 2 * 18 / 2, 4 / 2))
    iv = seed_mean_ci95([[4, 0, 8], [2, 0, 4]])
    # (MS_seed + MS_episode - MS_resid) / (S E) = 22 / 6: seed part 6 / 6 (1 df), episode part 16 / 6 (2 df)
    assert iv.mean == 3.0 and iv.variance == pytest.approx(22 / 6)
    assert iv.ci95 == pytest.approx(math.sqrt(T1 ** 2 * 1 + T2 ** 2 * 16 / 6))
    assert T2 < iv.ci95 / math.sqrt(iv.variance) < T1 and 1 < iv.df < 2
    # episode part (MS_episode - MS_resid) = 0: only the seeds' t interval is left
    flat = seed_mean_ci95([[3, 1, 5], [1, 1, 1]])
    assert (flat.mean, flat.variance, flat.ci95) == pytest.approx((2.0, 1.0, T1)) and flat.df == pytest.approx(1)


def test_one_seed_is_the_episode_interval_and_paired_singles_the_paired_normal_interval():
    a, b = [0.9, 1.0, 0.8, 0.9, 1.0], [0.6, 0.7, 0.5, 0.6, 0.8]
    one = seed_mean_ci95([a])
    assert (one.mean, one.ci95) == mean_ci95(a) and one.df == math.inf
    d = paired_seed_difference([a], [b])
    mean, ci = mean_ci95([x - y for x, y in zip(a, b)])
    assert (d.mean, d.ci95) == pytest.approx((mean, ci))
    assert d.p_value() == pytest.approx(math.erfc(abs(mean) / (ci / Z95) / math.sqrt(2)))
    assert paired_seed_difference([a], [a]).p_value() == 1.0
    # far in the tail, p is still a number (not 1 - P(T <= t) rounded to 0): z = 10, and t = 40 on 30 df
    assert Interval(1.0, Z95 * 0.1, 0.01).p_value() == pytest.approx(math.erfc(10 / math.sqrt(2)), rel=1e-9)
    t30 = Interval(4.0, 0.1 * t_quantile(0.975, 30), 0.01, ((0.01, 30.0),))  # t = 40 on 30 df
    assert t30.df == pytest.approx(30) and 0 < t30.p_value() < 1e-20
    assert (p_text(t30.p_value())[:4], p_text(0.0), p_text(0.2)) == ("p=1.", "p<1e-300, *", "p=0.2")


def test_paired_difference_to_a_constant_row_is_the_row_shifted():
    """b scores 1 on every episode: the difference carries a's seed part and episode part only."""
    d = paired_seed_difference([[4, 0, 8], [2, 0, 4]], [[1, 1, 1]])
    assert d.mean == 2.0 and d.ci95 == pytest.approx(seed_mean_ci95([[4, 0, 8], [2, 0, 4]]).ci95)
    assert d.p_value() > 0.05 and d.ci95 > abs(d.mean)  # p < 0.05 exactly when the interval excludes 0
    far = paired_seed_difference([[4.0, 4.1, 4.2], [4.1, 4.2, 4.0]], [[1, 1, 1]])
    assert far.p_value() < 0.05 and far.ci95 < abs(far.mean)


def _simulate(rng: np.random.Generator, mean: float, seeds: int, episode: np.ndarray, sd: tuple[float, float]
              ) -> np.ndarray:
    """a[s, i] = mean + seed_s + episode_i + resid, seed and residual with standard deviations ``sd``."""
    return mean + rng.normal(0, sd[0], (seeds, 1)) + episode[None, :] + rng.normal(0, sd[1], (seeds, len(episode)))


@pytest.mark.parametrize("seeds", [2, 3])
def test_interval_covers_the_true_mean_about_95_percent(seeds):
    """2000 tables with known components (sd: seed 0.03, episode 0.1, residual 0.05; 40 episodes): the seed-aware
    interval covers 0.7 about 95 % of the time, the episode interval of the seed-averaged accuracies far less."""
    rng = np.random.default_rng(20260101 + seeds)
    hits = naive = 0
    for _ in range(2000):
        a = _simulate(rng, 0.7, seeds, rng.normal(0, 0.1, 40), (0.03, 0.05))
        iv = seed_mean_ci95(a.tolist())
        hits += abs(iv.mean - 0.7) <= iv.ci95
        mean, ci = mean_ci95(a.mean(axis=0).tolist())
        naive += abs(mean - 0.7) <= ci
    print(f"{seeds} seeds: covered {hits / 2000:.3f}, the episode interval {naive / 2000:.3f}")
    assert 0.93 <= hits / 2000 <= 0.985, hits / 2000
    assert naive / 2000 < 0.85, naive / 2000


def test_paired_interval_covers_the_true_difference():
    """1000 pairs of 3-seed tables on 40 shared episodes, b's episode effects 0.8 of a's plus its own."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(1000):
        episode = rng.normal(0, 0.1, 40)
        a = _simulate(rng, 0.7, 3, episode, (0.02, 0.05))
        b = _simulate(rng, 0.6, 3, 0.8 * episode + rng.normal(0, 0.06, 40), (0.02, 0.05))
        d = paired_seed_difference(a.tolist(), b.tolist())
        hits += abs(d.mean - 0.1) <= d.ci95
    print(f"paired, 3 seeds each: covered {hits / 1000:.3f}")
    assert 0.93 <= hits / 1000 <= 0.99, hits / 1000


# -- leaderboard rows --------------------------------------------------------------------------------
A = {0: [0.9, 1.0, 0.8, 0.9, 1.0], 1: [0.8, 0.9, 0.8, 0.7, 0.9], 2: [1.0, 0.9, 0.9, 0.8, 1.0]}
B = [0.6, 0.7, 0.5, 0.6, 0.8]


def seeded(method: str, per_episode: list[float], seed: int, minute: int = 0, **fields) -> dict:
    """A generated result whose fit ran with training seed ``seed``, written at 10:``minute``."""
    doc = result_doc(method, per_episode, stamp=f"2026-01-01T10:{minute:02d}:00+00:00", **fields)
    doc["fit"] = {**doc["fit"], "seed": seed}
    return doc


def results() -> list[tuple[Path, dict]]:
    """protonet over three seeds (mean 0.8867), a single-seed rival (0.64), and single protonet fits (0.82) that
    must not join the three: another budget name, another iteration count, another device."""
    docs = [(f"protonet_seed{s}.json", seeded("protonet", A[s], s, minute=s)) for s in A]
    docs += [("rival.json", seeded("rival", B, 0)),
             ("paper.json", seeded("protonet", A[1], 1, budget={"name": "paper", "iterations": 10})),
             ("longer.json", seeded("protonet", A[1], 2, budget={"name": "quick", "iterations": 20})),
             ("gpu.json", seeded("protonet", A[1], 0, device="GPU",
                                 provenance={**result_doc("x", [1.0])["provenance"], "device": "NVIDIA Test GPU",
                                             "device_type": "cuda"}))]
    return [(Path(name), doc) for name, doc in docs]


def test_results_differing_only_by_fit_seed_form_one_row():
    [g] = group(results())
    assert [[e.path.name for e in r.entries] for r in g.rows] == [
        ["protonet_seed0.json", "protonet_seed1.json", "protonet_seed2.json"], ["gpu.json"], ["longer.json"],
        ["paper.json"], ["rival.json"]]
    three = g.rows[0]
    assert three.seeds == [0, 1, 2] and three.accuracy == seed_mean_ci95([A[0], A[1], A[2]])
    assert three.accuracy.mean == pytest.approx(sum(map(sum, A.values())) / 15)
    table = frame(g)
    assert list(table["seeds × episodes"]) == ["3 seeds × 5 episodes"] + ["1 seed × 5 episodes (single-seed)"] * 4
    assert table["accuracy ± 95% CI"][0] == f"{three.accuracy.mean:.4f} ± {three.accuracy.ci95:.4f}"
    assert table["file"][0] == "protonet_seed0.json, protonet_seed1.json, protonet_seed2.json"
    assert list(table["budget"][1:4]) == ["quick", "quick (CPU)", "paper"]  # 10 and 20 iterations of quick apart
    rival = paired_seed_difference([B], [A[0], A[1], A[2]])
    assert paired(g.rows[4], three) == (rival.mean, rival.ci95, rival.p_value())
    assert table["vs best (paired)"][4].startswith(f"{rival.mean:+.4f} ± {rival.ci95:.4f} (p=")


def test_a_repeated_seed_opens_another_row_and_old_results_use_the_protocol_seed():
    docs = results()[:3] + [(Path("again.json"), seeded("protonet", A[2], 0, minute=9))]
    [g] = group(docs)
    assert sorted([e.path.name for e in r.entries] for r in g.rows) == [
        ["again.json"], ["protonet_seed0.json", "protonet_seed1.json", "protonet_seed2.json"]]
    old = result_doc("protonet", A[0])
    old["fit"].pop("seed", None)
    assert fit_seed(old) == old["protocol"]["seed"] == 0


def test_leaderboard_compare_and_report_show_seeds_times_episodes(tmp_path):
    lb = tmp_path / "leaderboards"
    five = lb / "synthetic" / "5w1s"
    for path, doc in results()[:4]:
        put_result(five, doc, path.stem)
    shown = CliRunner().invoke(main, ["leaderboard", "--leaderboards", str(lb)])
    assert shown.exit_code == 0, shown.output
    assert "3 seeds × 5 episodes" in shown.output and "1 seed × 5 episodes (single-seed)" in shown.output
    # the text table lists a row's files under it, one a line, by rank: not a column as wide as three names
    assert not [line for line in shown.output.splitlines() if line.count(".json") > 1]
    assert re.search(r"^   1  protonet_seed0\.json\n      protonet_seed1\.json\n      protonet_seed2\.json\n"
                     r"   2  rival\.json$", shown.output, re.M), shown.output
    as_text = CliRunner().invoke(main, ["compare", str(five)])  # compare prints the leaderboard's text tables
    assert as_text.exit_code == 0 and "   1  protonet_seed0.json\n      protonet_seed1.json\n" in as_text.output
    compared = CliRunner().invoke(main, ["compare", str(five), "--markdown"])
    assert compared.exit_code == 0, compared.output
    assert re.search(r"\| 1 \| protonet \| [0-9.]+ ± [0-9.]+ \| 3 seeds × 5 episodes \| - \|", compared.output)
    files = build(lb)
    page = files["synthetic-5w1s.html"].decode()
    main_rows = re.findall(r'<tr data-file="([^"]+)"><td>(\d+)</td><td>([^<]+)</td><td>[^<]+</td><td>([^<]+)</td>',
                           page)
    assert main_rows[:2] == [("protonet_seed0.json", "1", "protonet", "3 seeds × 5 episodes"),
                             ("rival.json", "2", "rival", "1 seed × 5 episodes (single-seed)")]
    # every file has a row of a leaderboard table: the three fits in the table of fits
    fits = page.split("Fits of the rows over several seeds")[1]
    assert re.findall(r'<tr data-file="([^"]+)"><td>1</td><td>protonet</td><td>(\d)</td>', fits) == [
        ("protonet_seed0.json", "0"), ("protonet_seed1.json", "1"), ("protonet_seed2.json", "2")]
    assert "3 seeds × 5 episodes" in files["synthetic-5w1s.md"].decode()
    assert "on 3 seeds × 5 episodes" in files["index.md"].decode()


def test_seeds_run_on_two_cpus_form_one_row_whose_timings_are_one_cpus():
    """Accuracy does not depend on the CPU that fitted it: the seeds join one row; its timings are the means of
    the seeds on the CPU that ran most of them (never an average of two CPUs), and it says how many those are."""
    intel, amd = "CPU Intel Test (1 threads)", "CPU AMD Test (1 threads)"
    docs = [seeded("protonet", A[s], s, minute=s, device=d) for s, d in ((0, amd), (1, intel), (2, intel))]
    for doc, seconds in zip(docs, (100.0, 10.0, 20.0)):
        doc["fit"]["seconds"] = seconds
    [g] = group([(Path(f"s{i}.json"), d) for i, d in enumerate(docs)])
    [row] = g.rows
    assert row.seeds == [0, 1, 2] and row.accuracy == seed_mean_ci95([A[0], A[1], A[2]])
    assert [e.path.name for e in row.timed] == ["s1.json", "s2.json"]
    table = frame(g)
    assert table["fit s"][0] == "15"  # the Intel's two fits; the AMD's 100 s is not averaged in
    assert table["device"][0] == f"{intel}, timings of 2 of 3 fits"
    # a tie: the first seed's CPU
    [g] = group([(Path(f"s{i}.json"), d) for i, d in enumerate(docs[:2])])
    assert g.rows[0].timing_device() == f"{amd}, timings of 1 of 2 fits"
    assert frame(g)["fit s"][0] == "100"


def test_rows_of_one_method_that_ran_different_hparams_say_which():
    """Two rows that would read ``finetune`` name the hparams that tell them apart; a row alone keeps its name."""
    linear, cosine, rival = (seeded("finetune", A[0], 0), seeded("finetune", A[1], 0), seeded("rival", B, 0))
    linear["method"]["hparams"] = {"head": "linear", "lr": 0.01}
    cosine["method"]["hparams"] = {"head": "cosine", "lr": 0.01, "augment": False}  # augment: only one has it
    [g] = group([(Path("linear.json"), linear), (Path("cosine.json"), cosine), (Path("rival.json"), rival)])
    assert list(frame(g)["method"]) == ["finetune (head=linear)", "finetune (head=cosine)", "rival"]
