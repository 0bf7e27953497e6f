"""MAML's accuracy against meta-iterations, beside the learn2learn-style loop's (:mod:`mtbench.bench.peer`).

Every learner trains on the same tasks (one task generator, seeded alike for each learner) and is scored on the
same test episodes, in one of the :data:`RECIPES`: Finn et al.'s Omniglot 5-way 1-shot setting (inner lr 0.4,
one inner step in training and three at test, meta-batch 32, Adam 1e-3, one query per class in training), their
20-way 1-shot setting (inner lr 0.1, five inner steps in training and ten at test, meta-batch 16), which tells
whether second-order MAML's levelling off there is its implementation's or the recipe's, or
mtbench's quick miniImageNet recipe (the 32-channel Conv4, inner lr 0.01, one inner step in training and ten at
test, meta-batch 2, Adam 1e-3, 15 queries per class in training), which tells whether MAML's distance from the
published miniImageNet figures is its implementation's or the recipe's. mtbench's MAML starts from the peer's
very weights (its ``init=xavier``, the same draws from the same seed). On Omniglot a third learner, ``mtbench
maml, PyTorch default init``, is mtbench's MAML started from PyTorch's default initialisation instead
(``init=default``, MAML's default until version 2): it shows what the initialisation does, apart from the rest of
the implementation.

``mtbench bench --maml-curves N [--curves-recipe NAME]`` runs it and writes the curves (accuracy after each test
step at every evaluated iteration, with 95 % CIs, and the seconds spent) into the bench JSON; the reproduction
page shows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mtbench.bench import peer
from mtbench.core.errors import UserError
from mtbench.core.metrics import mean_ci95
from mtbench.data import DATASETS, Split, resolve_data_root
from mtbench.data.episodes import EpisodeSet, EpisodeSpec, sample_indices
from mtbench.methods import METHODS, FitContext, make_hparams
from mtbench.run.evaluate import evaluate

LEARNERS = ("mtbench maml", "mtbench maml, PyTorch default init", "learn2learn-style")


@dataclass(frozen=True)
class Recipe:
    """What every learner of a comparison trains and is scored on: the tasks (dataset, ways, shots) and MAML's
    settings (Conv4 ``width`` channels, second order)."""

    dataset: str
    ways: int
    shots: int
    inner_lr: float
    meta_batch: int
    meta_lr: float
    train_steps: int
    test_steps: int
    train_queries: int
    width: int
    learners: tuple[str, ...] = LEARNERS

    def settings(self) -> dict[str, Any]:
        """The JSON record of the recipe (the keys of the files written before miniImageNet had one, and more)."""
        return {k: v for k, v in asdict(self).items() if k != "learners"}


RECIPES = {
    "omniglot-finn": Recipe("omniglot", 5, 1, inner_lr=0.4, meta_batch=32, meta_lr=1e-3, train_steps=1,
                            test_steps=3, train_queries=1, width=64),
    # Finn et al.'s 20-way recipe, what `mtbench run --method maml --budget paper` trains at Omniglot 20w1s
    # (baselines/maml.py: paper_settings): does the peer also level off where mtbench's MAML does?
    "omniglot-finn-20w1s": Recipe("omniglot", 20, 1, inner_lr=0.1, meta_batch=16, meta_lr=1e-3, train_steps=5,
                                  test_steps=10, train_queries=1, width=64,
                                  learners=("mtbench maml", "learn2learn-style")),
    # MAML's own --budget quick settings on miniImageNet (baselines/maml.py: presets and quick_presets)
    **{f"miniimagenet-quick-5w{shots}s": Recipe("miniimagenet", 5, shots, inner_lr=0.01, meta_batch=2, meta_lr=1e-3,
                                                train_steps=1, test_steps=10, train_queries=15, width=32,
                                                learners=("mtbench maml", "learn2learn-style"))
       for shots in (1, 5)},
}


def recipe(name: str) -> Recipe:
    """The recipe called ``name``, or a :class:`UserError` listing them."""
    if name not in RECIPES:
        raise UserError(f"--curves-recipe {name}: not a recipe; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_dataset(r: Recipe, data_root: str | None) -> Any:
    """``r``'s dataset in the data root; a :class:`UserError` naming the folder when it is not there (the Omniglot
    recipe runs on the bench's own data instead: see :func:`mtbench.bench.workloads.load_data`)."""
    data = DATASETS.get(r.dataset)(root=resolve_data_root(data_root), progress=False)
    if not data.is_available():
        raise UserError(f"--curves-recipe needs {r.dataset} under {data.root}: run `mtbench data download "
                        f"{r.dataset}` or give --data-root")
    return data


def recipe_splits(r: Recipe, device: torch.device, data_root: str | None) -> tuple[Split, Split]:
    """The fit and test splits of ``r``'s dataset (:func:`recipe_dataset`), on ``device``."""
    data = recipe_dataset(r, data_root)
    return data.load(data.fit_split).to(device), data.load(data.eval_split).to(device)


def _point(iteration: int, started: float, by_step: list[tuple[float, float]],
           last: list[float]) -> dict[str, Any]:
    """One scored iteration: mean ± CI after each test step, and each episode's accuracy after the last one (so that
    two learners compare paired, episode by episode)."""
    return {"iteration": iteration, "seconds": time.perf_counter() - started,
            "by_step": [{"step": s + 1, "mean": m, "ci95": c} for s, (m, c) in enumerate(by_step)],
            "per_episode": last}


def recipe_hparams(r: Recipe, init: str = "xavier", meta_batch: int | None = None) -> dict[str, str]:
    """The ``--hp`` values that make mtbench's MAML train and adapt as ``r`` says (``meta_batch``: another
    meta-batch size than the recipe's)."""
    return {"backbone": "conv4" if r.width == 64 else f"conv4-{r.width}", "inner_lr": str(r.inner_lr),
            "meta_batch": str(meta_batch or r.meta_batch), "meta_lr": str(r.meta_lr), "eval_steps": str(r.test_steps),
            "inner_steps": str(r.train_steps), "train_queries": str(r.train_queries), "init": init}


def _ours(source: Split, episodes: EpisodeSet, r: Recipe, iterations: int, eval_at: set[int], seed: int,
          init: str) -> list[dict[str, Any]]:
    cls = METHODS.get("maml")
    hp = make_hparams(cls, r.dataset, recipe_hparams(r, init), str(iterations))
    method = cls(hp, source.image_shape, torch.Generator().manual_seed(1000 + seed), source.device)  # the peer's seed
    method.prepare(r.ways)
    points: list[dict[str, Any]] = []
    started = time.perf_counter()

    def score(i: int) -> None:
        accuracy = evaluate(method, episodes, progress=False)["accuracy"]
        steps = accuracy["by_step"][1:]  # after each test step
        points.append(_point(i, started, [(s["mean"], s["ci95"]) for s in steps], accuracy["per_episode"]))

    class Scored(FitContext):
        def loop(self, desc: str, steps: int | None = None) -> Iterator[int]:
            for i in range(self.iterations):
                if i in eval_at:
                    score(i)
                yield i

    tasks = torch.Generator().manual_seed(2000 + seed)
    method.fit(Scored(source, EpisodeSpec(r.ways, r.shots, 1, 1), iterations, tasks, source.device, False))
    score(iterations)
    return points


def _peer(source: Split, episodes: EpisodeSet, r: Recipe, iterations: int, eval_at: set[int],
          seed: int) -> list[dict[str, Any]]:
    model = peer.conv4(source.image_shape, r.ways, torch.Generator().manual_seed(1000 + seed), r.width)
    model = model.to(source.device)
    opt = torch.optim.Adam(model.parameters(), r.meta_lr)
    tasks = torch.Generator().manual_seed(2000 + seed)
    labels = torch.arange(r.ways, device=source.device)
    sy = labels.repeat_interleave(r.shots).expand(r.meta_batch, -1)
    qy = labels.repeat_interleave(r.train_queries).expand(r.meta_batch, -1)
    points: list[dict[str, Any]] = []
    started = time.perf_counter()

    def score(i: int) -> None:
        table = peer.accuracy_by_step(model, episodes, r.test_steps, r.inner_lr).double()
        points.append(_point(i, started, [mean_ci95(acc.tolist()) for acc in table], table[-1].tolist()))

    for i in range(iterations):
        if i in eval_at:
            score(i)
        # the tasks mtbench's MAML draws: shots + queries images of each class, from the same generator
        x = source.gather(sample_indices(source, r.ways, r.shots + r.train_queries, tasks, n=r.meta_batch)
                          .to(source.device))
        peer.meta_step(model, opt, x[:, :, : r.shots].flatten(1, 2), sy, x[:, :, r.shots:].flatten(1, 2), qy,
                       r.inner_lr, r.train_steps)
    score(iterations)
    return points


def maml_curves(source: Split, test: Split, iterations: int, every: int, episodes: int, seed: int = 0,
                log: Callable[[str], None] = lambda _: None, r: Recipe = RECIPES["omniglot-finn"],
                name: str = "omniglot-finn", fit_seed: int = 0) -> dict[str, Any]:
    """Each learner of ``r`` trained ``iterations`` meta-iterations from ``fit_seed`` (the initial weights and the
    training tasks), scored every ``every`` iterations on the same ``episodes`` test episodes of ``r``'s ways and
    shots (15 queries) drawn from ``test`` with ``seed``: fits of several seeds are scored on the same episodes."""
    spec = EpisodeSpec(r.ways, r.shots, 15, episodes, seed=seed)
    eps = EpisodeSet(test, spec)
    eval_at = set(range(0, iterations, every))
    curves = {}
    for learner in r.learners:
        if learner == "learn2learn-style":
            points = _peer(source, eps, r, iterations, eval_at, fit_seed)
        else:
            points = _ours(source, eps, r, iterations, eval_at, fit_seed,
                           "default" if learner.endswith("default init") else "xavier")
        last = points[-1]["by_step"][-1]
        log(f"  {learner}: {last['mean']:.4f} ± {last['ci95']:.4f} after {iterations} meta-iterations "
            f"({points[-1]['seconds']:.0f} s)")
        curves[learner] = points
    return {"recipe": name, "iterations": iterations, "every": every, "episodes": episodes, "seed": seed,
            "fit_seed": fit_seed, "episodes_sha": eps.sha, "settings": r.settings(), "curves": curves}
