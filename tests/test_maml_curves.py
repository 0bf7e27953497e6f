"""The MAML learning-curve comparison of ``mtbench bench --maml-curves`` (tiny, generated Omniglot-shaped data)."""

from __future__ import annotations

import torch

from mtbench.bench import peer
from mtbench.bench.curves import LEARNERS, maml_curves
from mtbench.bench.workloads import synthetic_split
from mtbench.methods import METHODS, make_hparams


def test_mtbench_maml_starts_from_the_peers_very_weights() -> None:
    """MAML's default initialisation (``init=xavier``) draws what the learn2learn-style network draws, in its order."""
    cls = METHODS.get("maml")
    method = cls(make_hparams(cls, "omniglot", {}), (1, 28, 28), torch.Generator().manual_seed(7), torch.device("cpu"))
    method.prepare(5)
    theirs = [p for p in peer.conv4((1, 28, 28), 5, torch.Generator().manual_seed(7)).parameters()]
    ours = list(method.model.parameters())
    assert [tuple(p.shape) for p in ours] == [tuple(p.shape) for p in theirs]
    for a, b in zip(ours, theirs):
        assert torch.equal(a.detach(), b.detach())


def test_curves_score_every_learner_on_the_same_episodes(one_thread) -> None:
    doc = maml_curves(synthetic_split("fit", 20), synthetic_split("test", 10), iterations=1, every=1, episodes=1)
    assert list(doc["curves"]) == list(LEARNERS) and len(doc["episodes_sha"]) == 64
    for points in doc["curves"].values():
        assert [p["iteration"] for p in points] == [0, 1]
        assert all([s["step"] for s in p["by_step"]] == [1, 2, 3] for p in points)
        assert all(0.0 <= s["mean"] <= 1.0 for p in points for s in p["by_step"])
    # before any meta-update mtbench's MAML is the peer's network: the same predictions; from PyTorch's default
    # initialisation, other ones
    start = {name: [s["mean"] for s in doc["curves"][name][0]["by_step"]] for name in LEARNERS}
    assert start["mtbench maml"] == start["learn2learn-style"] != start["mtbench maml, PyTorch default init"]
