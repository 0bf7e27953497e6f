"""DANN on the Omniglot -> Omniglot-M domain shift, through the CLI as a user types it, paired with its
source-only reference on the same episodes.

The reference is the leaderboard's source-only row (quick budget: 3000 iterations of 64 source images;
`mtbench validate` checks that file in tests/test_leaderboard.py); DANN runs here with two thirds of that
budget (2000 iterations of 64 source + 64 target images), on the first 100 of the row's 600 episodes (episode
*i* is drawn from its own seed, whatever the count, so they are the same episodes).

What is asserted is that DANN learns the shifted target (its 95 % interval above 0.25; chance is 0.2), not that
it beats source-only: that gain depends on the CPU the fit runs on. The same command, one thread each:
0.4733 +- 0.0219 on 2026-12-01 (paired gain over the source-only row +0.1552 +- 0.0197), and 0.3056 +- 0.0155 in
CI on an Intel Xeon on 2026-12-02 (gain -0.0125 +- 0.0158). The leaderboard shows the same spread by fit seed at
the full quick budget: DANN 0.4887 / 0.2772 / 0.5764 over 600 episodes for fit seeds 0 / 1 / 2, source-only
0.3052 / 0.3107 / 0.3223. The gradient reversal is an unstable game: float sums taken in another order send it
elsewhere. The paired gain is printed, for a failing run's log.

Why not shorter (measured 2026-12-02, 1 thread, first 100 episodes): short DANN fits have not learned. At 1000
iterations DANN scored 0.2086 on 200 episodes (600 DANN iterations from a 600-iteration source-only fit,
--init: 0.2138); with the coefficient's maximum at 0.3, 800 iterations scored 0.4108 / 0.3171 / 0.3211 by fit
seed 0 / 1 / 2, and the same 800-iteration fit on 2 threads instead of 1 scored 0.2256 on 200 episodes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mtbench.board.leaderboard import fit_seed
from mtbench.core.metrics import mean_ci95
from mtbench.results import read_result
from support import cli_run, requires_real_data

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
ROWS = Path(__file__).resolve().parent.parent / "leaderboards" / "omniglot-shift" / "5w1s"
EPISODES = 100
BUDGET = ["--budget", "2000", "--hp", "batch_size=64"]  # the quick budget's minibatch, 2/3 of its iterations


@pytest.fixture(scope="module")
def dann(tmp_path_factory: pytest.TempPathFactory) -> dict:
    requires_real_data("omniglot")
    requires_real_data("mini-imagenet")
    return cli_run(tmp_path_factory.mktemp("dann"), "--method", "dann", "--dataset", "omniglot-shift", "--ways", "5",
                   "--shots", "1", "--episodes", str(EPISODES), *BUDGET)


def test_dann_learns_the_shifted_target(dann: dict) -> None:
    # the pairing: the first fit-seed-0 source-only result (the folder also holds the rows of fit seeds 0-2)
    rows = [read_result(p) for p in sorted(ROWS.glob("*source-only*.json"))]
    row = min((r for r in rows if fit_seed(r) == 0), key=lambda r: r["provenance"]["timestamp"])
    p, q = dann["protocol"], row["protocol"]
    assert (p["ways"], p["shots"], p["queries"], p["seed"]) == (q["ways"], q["shots"], q["queries"], q["seed"])
    assert dann["dataset"]["version"] == row["dataset"]["version"] and row["budget"]["name"] == "quick"
    assert dann["dataset"]["unlabelled_split"] == "target"
    assert dann["fit"]["iterations"] < row["fit"]["iterations"]  # the reference had the longer fit
    gains = [a - b for a, b in zip(dann["accuracy"]["per_episode"], row["accuracy"]["per_episode"][:EPISODES])]
    print("paired gain over the source-only row: %.4f +- %.4f" % mean_ci95(gains))
    mean, ci = mean_ci95(dann["accuracy"]["per_episode"])
    assert len(dann["accuracy"]["per_episode"]) == EPISODES
    assert mean - ci > 0.25, (mean, ci)  # measured 0.4733 and 0.3056 (see above); chance 0.2
