"""Every registered method, on generated data: the Method contract, determinism and learning.

Parametrised over the registry, so a new method is tested the moment it is registered.
"""

from __future__ import annotations

import math

import pytest
import torch

from mtbench.data import DATASETS
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.methods import METHODS, FitContext, make_hparams
from mtbench.results import validate
from mtbench.run.runner import RunSpec, run

ALL = METHODS.names()
SPEC = EpisodeSpec(ways=5, shots=1, queries=5, episodes=30, seed=7)


@pytest.fixture(scope="module")
def test_split():
    return DATASETS.get("synthetic")().load("test")


def fitted(name: str, iterations: int, split):
    cls = METHODS.get(name)
    g = torch.Generator().manual_seed(0)
    method = cls(make_hparams(cls, "synthetic", {}), split.image_shape, g, torch.device("cpu"))
    source = DATASETS.get("synthetic")().load("train")
    method.fit(FitContext(source, SPEC, iterations, g, torch.device("cpu"), progress=False))
    return method


@pytest.mark.parametrize("name", ALL)
def test_contract_shapes_finiteness_and_no_mutation(name: str, test_split, one_thread) -> None:
    cls = METHODS.get(name)
    assert cls.name == name and cls.description and isinstance(cls.transductive, bool)
    assert cls.iterations_for("quick", "synthetic") >= 0
    method = fitted(name, 2, test_split)
    episode = EpisodeSet(test_split, SPEC)[0]
    support_x, support_y = episode.support_x.clone(), episode.support_y.clone()
    with torch.no_grad():
        predictors = list(method.adapt(episode.support_x, episode.support_y, SPEC.ways))
    assert predictors, "adapt must yield at least one predictor"
    for predictor in predictors:
        logits = predictor(episode.query_x)
        assert logits.shape == (SPEC.ways * SPEC.queries, SPEC.ways)
        assert bool(torch.isfinite(logits).all())
    assert torch.equal(episode.support_x, support_x) and torch.equal(episode.support_y, support_y)


@pytest.mark.parametrize("name", ALL)
def test_quick_budget_learns_on_synthetic(name: str, one_thread) -> None:
    spec = RunSpec(method=name, dataset="synthetic", episodes=SPEC, budget="quick", device="cpu",
                   out=None, progress=False)
    doc, _ = run(spec)
    assert validate(doc) == []
    acc = doc["accuracy"]
    assert all(0.0 <= a <= 1.0 for a in acc["per_episode"]) and math.isfinite(acc["ci95"])
    assert acc["mean"] >= 0.6, f"{name} at quick budget: {acc['mean']:.3f} (chance is 0.2)"
    steps = [s["step"] for s in acc["by_step"]]
    assert steps == sorted(set(steps)), steps


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_numbers(name: str, one_thread) -> None:
    spec = RunSpec(method=name, dataset="synthetic", episodes=EpisodeSpec(5, 1, 5, 10, seed=3), budget="3",
                   device="cpu", out=None, progress=False)
    first, _ = run(spec)
    second, _ = run(spec)
    assert second["accuracy"]["per_episode"] == first["accuracy"]["per_episode"]
    assert [s["mean"] for s in second["accuracy"]["by_step"]] == [s["mean"] for s in first["accuracy"]["by_step"]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ALL)
def test_cuda_run_sees_the_cpu_episodes_and_scores_alike(name: str) -> None:
    results = {}
    for device in ("cpu", "cuda"):
        spec = RunSpec(method=name, dataset="synthetic", episodes=SPEC, budget="quick", device=device,
                       out=None, progress=False)
        results[device], _ = run(spec)
    assert results["cuda"]["protocol"]["episodes_sha"] == results["cpu"]["protocol"]["episodes_sha"]
    assert results["cuda"]["provenance"]["device_type"] == "cuda"
    cpu, gpu = results["cpu"]["accuracy"], results["cuda"]["accuracy"]
    assert abs(cpu["mean"] - gpu["mean"]) <= 2 * max(cpu["ci95"], gpu["ci95"]) + 0.02
