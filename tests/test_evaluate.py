"""The evaluator on generated data: the batched path (``Method.predict_batch``, chunks of episodes)
scores every episode as the per-episode path does, and its result has the same shape."""

from __future__ import annotations

import math

import pytest
import torch

from mtbench.baselines.protonet import prototypes, squared_distances
from mtbench.data import DATASETS
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.run.evaluate import CHUNK_VALUES, episode_chunks, evaluate
from mtbench.methods import METHODS, FitContext, Method, at_step, make_hparams

SPEC = EpisodeSpec(ways=5, shots=2, queries=4, episodes=23, seed=5)
PER_EPISODE = SPEC.ways * SPEC.per_class * 3 * 16 * 16  # input values of one synthetic episode


@pytest.fixture(scope="module")
def episodes() -> EpisodeSet:
    return EpisodeSet(DATASETS.get("synthetic")().load("test"), SPEC)


@pytest.fixture(scope="module")
def protonet(one_thread):
    """A ProtoNet trained a few episodes on the synthetic training split (BatchNorm statistics included)."""
    cls = METHODS.get("protonet")
    g = torch.Generator().manual_seed(0)
    method = cls(make_hparams(cls, "synthetic", {}), (3, 16, 16), g, torch.device("cpu"))
    method.fit(FitContext(DATASETS.get("synthetic")().load("train"), SPEC, 5, g, torch.device("cpu"), progress=False))
    return method


@pytest.mark.parametrize(("max_values", "sizes"), [
    (30 * PER_EPISODE, [23]),
    (7 * PER_EPISODE, [6, 6, 6, 5]),  # at most 7: four chunks, sizes within one
    (PER_EPISODE + 1, [1] * 23),
    (1, [1] * 23),  # a chunk holds one episode whatever the bound
])
def test_chunks_cover_the_episodes_in_order_within_the_bound(episodes, max_values, sizes):
    chunks = episode_chunks(episodes, max_values)
    assert [hi - lo for lo, hi in chunks] == sizes
    assert [lo for lo, _ in chunks] == [0, *(hi for _, hi in chunks[:-1])] and chunks[-1][1] == len(episodes)


def test_chunks_default_to_the_bound_of_the_episodes_device(episodes):
    assert episode_chunks(episodes) == episode_chunks(episodes, CHUNK_VALUES["cpu"])
    assert len(episode_chunks(episodes)) == -(-len(episodes) // (CHUNK_VALUES["cpu"] // PER_EPISODE))


def test_predict_batch_gives_the_logits_of_adapt(episodes, protonet):
    support_x, support_y, query_x, _ = episodes.batch(4, 9)
    with torch.no_grad():
        batched = protonet.predict_batch(support_x, support_y, query_x, SPEC.ways)
        for e, i in enumerate(range(4, 9)):
            ep = episodes[i]
            (predictor,) = protonet.adapt(ep.support_x, ep.support_y, SPEC.ways)
            torch.testing.assert_close(batched[e], predictor(ep.query_x), rtol=1e-5, atol=1e-4)
    assert batched.shape == (5, SPEC.ways * SPEC.queries, SPEC.ways)


@pytest.mark.parametrize("max_values", [None, 7 * PER_EPISODE, 30 * PER_EPISODE])
def test_batched_and_per_episode_paths_score_every_episode_alike(episodes, protonet, max_values):
    batched = evaluate(protonet, episodes, progress=False, max_values=max_values)
    single = evaluate(protonet, episodes, progress=False, batched=False)
    assert batched["accuracy"]["per_episode"] == single["accuracy"]["per_episode"]
    assert len(set(single["accuracy"]["per_episode"])) > 1  # not a degenerate table
    assert batched["accuracy"]["mean"] == single["accuracy"]["mean"]
    assert batched["accuracy"]["ci95"] == single["accuracy"]["ci95"]
    assert batched["accuracy"]["by_step"] == single["accuracy"]["by_step"]
    for section in ("accuracy", "adaptation", "evaluation"):
        assert set(batched[section]) == set(single[section]), section
    assert batched["adaptation"]["steps"] == 1 and len(batched["adaptation"]["ms_by_step"]) == 1
    ms = batched["adaptation"]["ms_per_episode"]
    assert ms > 0 and math.isfinite(ms) and batched["adaptation"]["ms_by_step"] == [ms]
    assert batched["evaluation"]["batched_episodes"] == max(hi - lo for lo, hi in episode_chunks(episodes, max_values))
    assert single["evaluation"]["batched_episodes"] is None
    assert batched["evaluation"]["tasks_per_s"] > 0


class MeanPixel(Method):
    """Test-only: nearest class mean of the raw pixels, two predictors (steps 0 and 3), no ``predict_batch``."""

    name = "test-mean-pixel"

    def adapt(self, support_x, support_y, ways):
        protos = prototypes(support_x.flatten(1), support_y, ways)
        yield lambda q: torch.zeros(len(q), ways)
        yield at_step(3, lambda q: -squared_distances(q.flatten(1), protos))


def test_a_method_without_predict_batch_is_evaluated_episode_by_episode(episodes):
    assert Method.predict_batch is None and MeanPixel.predict_batch is None
    method = MeanPixel(None, (3, 16, 16), torch.Generator().manual_seed(0), torch.device("cpu"))
    scores = evaluate(method, episodes, progress=False)
    assert scores["evaluation"]["batched_episodes"] is None
    assert scores["adaptation"]["steps"] == 2 and [s["step"] for s in scores["accuracy"]["by_step"]] == [0, 3]
    assert scores["accuracy"]["by_step"][0]["mean"] == pytest.approx(1 / SPEC.ways)  # equal logits: class 0
