"""MAML's accuracy against meta-iterations, beside the learn2learn-style loop's (:mod:`mtbench.bench.peer`).

Both learn Omniglot 5-way 1-shot in Finn et al.'s setting (inner lr 0.4, one inner step in training and
three at test, meta-batch 32, Adam 1e-3, one query per class in training) from the same seed: the same
training tasks (one task generator, seeded alike for each learner) and the same test episodes. mtbench's
MAML starts from the peer's very weights (its ``init=xavier``, the same draws from the same seed). A third
learner, ``mtbench maml, PyTorch default init``, is mtbench's MAML started from PyTorch's default
initialisation instead (``init=default``, MAML's default until version 2): it shows what the initialisation
does, apart from the rest of the implementation.

``mtbench bench --maml-curves N`` runs it and writes the curves (accuracy after 1, 2 and 3 test steps at
every evaluated iteration, with 95 % CIs, and the seconds spent) into the bench JSON; the reproduction
page shows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from mtbench.bench import peer
from mtbench.core.metrics import mean_ci95
from mtbench.data import Split
from mtbench.data.episodes import EpisodeSet, EpisodeSpec, sample_indices
from mtbench.methods import METHODS, FitContext, make_hparams
from mtbench.run.evaluate import evaluate

LEARNERS = ("mtbench maml", "mtbench maml, PyTorch default init", "learn2learn-style")
INNER_LR, META_BATCH, META_LR, TEST_STEPS = 0.4, 32, 1e-3, 3


def _point(iteration: int, started: float, by_step: list[tuple[float, float]]) -> dict[str, Any]:
    return {"iteration": iteration, "seconds": time.perf_counter() - started,
            "by_step": [{"step": s + 1, "mean": m, "ci95": c} for s, (m, c) in enumerate(by_step)]}


def _ours(source: Split, episodes: EpisodeSet, iterations: int, eval_at: set[int], seed: int,
          init: str) -> list[dict[str, Any]]:
    cls = METHODS.get("maml")
    hp = make_hparams(cls, "omniglot", {"inner_lr": str(INNER_LR), "meta_batch": str(META_BATCH),
                                        "meta_lr": str(META_LR), "eval_steps": str(TEST_STEPS),
                                        "inner_steps": "1", "train_queries": "1", "init": init}, str(iterations))
    method = cls(hp, source.image_shape, torch.Generator().manual_seed(1000 + seed), source.device)  # the peer's seed
    method.prepare(episodes.spec.ways)
    points: list[dict[str, Any]] = []
    started = time.perf_counter()

    def score(i: int) -> None:
        steps = evaluate(method, episodes, progress=False)["accuracy"]["by_step"][1:]  # after 1, 2, 3 steps
        points.append(_point(i, started, [(s["mean"], s["ci95"]) for s in steps]))

    class Scored(FitContext):
        def loop(self, desc: str, steps: int | None = None) -> Iterator[int]:
            for i in range(self.iterations):
                if i in eval_at:
                    score(i)
                yield i

    tasks = torch.Generator().manual_seed(2000 + seed)
    method.fit(Scored(source, EpisodeSpec(episodes.spec.ways, 1, 1, 1), iterations, tasks, source.device, False))
    score(iterations)
    return points


def _peer(source: Split, episodes: EpisodeSet, iterations: int, eval_at: set[int], seed: int) -> list[dict[str, Any]]:
    ways = episodes.spec.ways
    model = peer.conv4(source.image_shape, ways, torch.Generator().manual_seed(1000 + seed)).to(source.device)
    opt = torch.optim.Adam(model.parameters(), META_LR)
    tasks = torch.Generator().manual_seed(2000 + seed)
    labels = torch.arange(ways, device=source.device).expand(META_BATCH, -1)
    points: list[dict[str, Any]] = []
    started = time.perf_counter()

    def score(i: int) -> None:
        by_step = [mean_ci95(peer.evaluate_episodes(model, episodes, s, INNER_LR).double().tolist())
                   for s in range(1, TEST_STEPS + 1)]
        points.append(_point(i, started, by_step))

    for i in range(iterations):
        if i in eval_at:
            score(i)
        x = source.gather(sample_indices(source, ways, 2, tasks, n=META_BATCH).to(source.device))
        peer.meta_step(model, opt, x[:, :, :1].flatten(1, 2), labels, x[:, :, 1:].flatten(1, 2), labels, INNER_LR, 1)
    score(iterations)
    return points


def maml_curves(source: Split, test: Split, iterations: int, every: int, episodes: int, seed: int = 0,
                log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Each learner of :data:`LEARNERS` trained ``iterations`` meta-iterations from ``seed``, scored every
    ``every`` iterations on the same ``episodes`` Omniglot-shaped 5-way 1-shot test episodes (15 queries)."""
    spec = EpisodeSpec(5, 1, 15, episodes, seed=seed)
    eps = EpisodeSet(test, spec)
    eval_at = set(range(0, iterations, every))
    curves = {}
    for name in LEARNERS:
        if name == "learn2learn-style":
            points = _peer(source, eps, iterations, eval_at, seed)
        else:
            points = _ours(source, eps, iterations, eval_at, seed, "default" if name.endswith("default init") else "xavier")
        last = points[-1]["by_step"][-1]
        log(f"  {name}: {last['mean']:.4f} ± {last['ci95']:.4f} after {iterations} meta-iterations "
            f"({points[-1]['seconds']:.0f} s)")
        curves[name] = points
    return {"iterations": iterations, "every": every, "episodes": episodes, "seed": seed,
            "episodes_sha": eps.sha, "settings": {"inner_lr": INNER_LR, "meta_batch": META_BATCH, "meta_lr": META_LR,
                                                     "train_steps": 1, "test_steps": TEST_STEPS, "train_queries": 1},
            "curves": curves}
