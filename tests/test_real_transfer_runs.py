"""The transfer methods' acceptance runs on real data, through the CLI as a user types them.

* fine-tune pre-training at the quick budget, saved, then adapted by ``finetune`` itself and, from
  the same checkpoint, by ``feature-extract`` — a two-command pipeline whose result names both
  stages (the quick budgets and pre-training of the two methods are the same, so this is also
  feature-extract's quick result);
* DANN against its source-only reference on the Omniglot -> Omniglot-M domain shift, same
  episodes: the adversarial term must pay on the shifted target.

Slow: a few minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support import cli_run, requires_real_data

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
EPISODES = "200"


def five_way_one_shot(method: str, dataset: str, out: Path, *extra: str) -> dict:
    return cli_run(out, "--method", method, "--dataset", dataset, "--ways", "5", "--shots", "1",
                   "--episodes", EPISODES, *extra)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    requires_real_data("omniglot")
    ckpt = tmp_path_factory.mktemp("ckpt") / "finetune.pt"
    first = five_way_one_shot("finetune", "omniglot", tmp_path_factory.mktemp("ft"), "--budget", "quick",
                              "--save", str(ckpt))
    second = five_way_one_shot("feature-extract", "omniglot", tmp_path_factory.mktemp("fe"), "--budget", "0",
                               "--init", str(ckpt))
    return {"finetune": first, "feature-extract": second}


def test_finetune_quick_reaches_the_floor_and_improves_with_steps(pipeline: dict[str, dict]) -> None:
    doc = pipeline["finetune"]
    steps = [s["mean"] for s in doc["accuracy"]["by_step"]]
    assert doc["accuracy"]["mean"] >= 0.85, steps
    assert steps[-1] > steps[0] + 0.3, steps  # step 0 is an untrained head: near chance


def test_feature_extract_from_the_finetune_checkpoint_names_both_stages(pipeline: dict[str, dict]) -> None:
    doc, first = pipeline["feature-extract"], pipeline["finetune"]
    assert doc["accuracy"]["mean"] >= 0.85, doc["accuracy"]["mean"]
    assert doc["init"]["method"] == "finetune" and doc["init"]["iterations"] == first["fit"]["iterations"]
    assert doc["method"]["name"] == "feature-extract" and doc["fit"]["iterations"] == 0
    assert doc["protocol"]["episodes_sha"] == first["protocol"]["episodes_sha"]


@pytest.fixture(scope="module")
def domain_shift(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    requires_real_data("omniglot")
    requires_real_data("mini-imagenet")
    return {m: five_way_one_shot(m, "omniglot-shift", tmp_path_factory.mktemp(m), "--budget", "quick")
            for m in ("dann", "source-only")}


def test_dann_beats_source_only_on_the_shifted_target(domain_shift: dict[str, dict]) -> None:
    dann, ref = domain_shift["dann"], domain_shift["source-only"]
    assert dann["protocol"]["episodes_sha"] == ref["protocol"]["episodes_sha"]
    assert dann["dataset"]["unlabelled_split"] == "target" and ref["dataset"]["unlabelled_split"] == "target"
    assert dann["fit"]["iterations"] == ref["fit"]["iterations"]
    # paired over the same episodes: the mean gain must exceed its own 95 % interval
    gains = [a - b for a, b in zip(dann["accuracy"]["per_episode"], ref["accuracy"]["per_episode"])]
    mean = sum(gains) / len(gains)
    sd = (sum((g - mean) ** 2 for g in gains) / (len(gains) - 1)) ** 0.5
    assert mean > 1.96 * sd / len(gains) ** 0.5, (dann["accuracy"]["mean"], ref["accuracy"]["mean"])
