"""Reptile (Nichol, Achiam & Schulman, 2018, "On First-Order Meta-Learning Algorithms")."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from mtbench.methods.backbones import ZeroHeadForOtherWays, build_backbone, linear_head
from mtbench.data.episodes import sample_indices
from mtbench.core.errors import UserError
from mtbench.methods.functional import Adam, Params, detached, forward, inner_loop, last, params_of
from mtbench.methods.training import cycled_batches, episode_generator
from mtbench.methods import METHODS, FitContext, Method, Predictor, as_chunk_of_one, at_step, positive, report_steps

#: the input values one vmapped pass of non-transductive predictions holds (queries x their support set plus
#: themselves): 2048 Omniglot images, so a 5-way 1-shot or 5-shot episode's queries are one pass (450 and 1950
#: images), while a 20-way 1-shot one's 6300 images, in one pass, took over 15 GB and were killed on a 24 GB machine.
#: A chunk of episodes shares the bound: vmapped over a CUDA chunk of 200 Omniglot episodes, 2048 images a pass each
#: (90,000 in all) overflowed the 32-bit indexing of CUDA's convolution
PREDICT_VALUES = 2048 * 28 * 28
#: on the CPU, at most this many queries a pass. On a machine shared with other jobs (the leaderboard's runs are),
#: small passes keep their activations in the shared caches: per scored step, one thread beside two other jobs
#: (2026-12-03), Omniglot 5w1s 437 ms in one pass of all 75 queries against 292 ms in passes of 16,
#: miniImageNet-shaped 5w1s (conv4-32) 2738 against 1123 ms. On the idle machine the pass size made no difference
#: (5w1s 196 against 194 ms, 20w1s 2593-2762 ms at 4 to 97 queries). The logits are the same bit for bit (each
#: query's batch is computed alone whatever the pass)
CPU_PASS_QUERIES = 16


class AdamMoments(nn.Module):
    """Adam's state ``(t, m, v)`` for a parameter dict, as buffers so that checkpoints keep it."""

    def __init__(self, params: Params) -> None:
        super().__init__()
        self.names = list(params)
        self.register_buffer("t", torch.zeros((), dtype=torch.long))
        for i, p in enumerate(params.values()):
            self.register_buffer(f"m{i}", torch.zeros_like(p))
            self.register_buffer(f"v{i}", torch.zeros_like(p))

    def state(self) -> tuple[int, Params, Params]:
        n = range(len(self.names))
        return (int(self.t), {k: getattr(self, f"m{i}") for k, i in zip(self.names, n)},
                {k: getattr(self, f"v{i}") for k, i in zip(self.names, n)})

    @torch.no_grad()
    def update(self, steps: int, m: Params, v: Params) -> None:
        """Advance by ``steps`` inner steps to moments ``m``/``v`` (averaged over a meta-batch's tasks)."""
        self.t += steps
        for i, k in enumerate(self.names):
            getattr(self, f"m{i}").copy_(m[k])
            getattr(self, f"v{i}").copy_(v[k])


@dataclass(frozen=True)
class ReptileHparams:
    """Defaults: the paper's 5-way Omniglot settings (Nichol et al. 2018, Table 3).

    Attributes:
        backbone: registered backbone name (batch-statistics BatchNorm, as the paper's code).
        inner_lr: inner Adam step size (beta1 = 0, as the paper's code).
        inner_steps: inner Adam steps per training task.
        inner_batch: images per inner step in training.
        train_shots: images per class of a training task (10 in the paper, whatever the test shots).
        meta_batch: tasks per outer update.
        meta_step: outer step size epsilon at the start, annealed linearly to ``meta_step_final``.
        meta_step_final: outer step size at the end of training.
        eval_steps: inner Adam steps at evaluation.
        eval_batch: support images per evaluation step, drawn as Nichol et al.'s code draws them: batches taken
            one after the other from shuffled passes over the support set (a batch may run on into the next
            pass), each episode shuffled by its own generator (:func:`~mtbench.methods.training.episode_generator`,
            the same draws for both Reptile variants); 0, or the support set's size or more: the whole
            support set at every step. The paper tests on batches of 5 (5-way Omniglot, 1-shot miniImageNet), 10
            (20-way Omniglot) and 15 (5-shot miniImageNet) images (its Tables 3 and 4: ``paper_settings``).
        report_steps: adaptation steps whose predictor is scored (0 = before adapting); the last
            is always ``eval_steps``.
        carry_moments: carry the inner Adam's moments (and step count) from task to task, as the
            paper's code does (its Adam slots are not part of the interpolated state), and start
            each evaluation task from them; ``false`` starts every task from fresh moments, which
            makes the first steps sign-like (every weight moves by ``inner_lr``, noise included).
    """

    backbone: str = "conv4"
    inner_lr: float = 1e-3
    inner_steps: int = 5
    inner_batch: int = 10
    train_shots: int = 10
    meta_batch: int = 5
    meta_step: float = 1.0
    meta_step_final: float = 0.0
    eval_steps: int = 50
    report_steps: str = "0,1,2,5,10,20"
    carry_moments: bool = True
    eval_batch: int = 0

    def __post_init__(self) -> None:
        for name in ("inner_lr", "inner_steps", "inner_batch", "train_shots", "meta_batch", "meta_step", "eval_steps"):
            positive(name, getattr(self, name))
        if self.eval_batch < 0:
            raise UserError(f"--hp eval_batch={self.eval_batch}: give a number of images ≥ 1, or 0 for the whole "
                            f"support set at every step")
        report_steps(self.report_steps, self.eval_steps)


@METHODS.register
class Reptile(ZeroHeadForOtherWays, Method):
    """Reptile (Nichol et al. 2018): move the initialisation toward task-adapted weights.

    Inner loop: Adam on minibatches of one task, through :func:`mtbench.methods.functional.inner_loop`
    (the loop MAML uses), vmapped over the meta-batch (a loop over its tasks on the CPU); outer update
    ``theta += epsilon * (mean_i phi_i - theta)``, epsilon annealed linearly. This variant is
    **not transductive**: each query is classified in a batch made of the support set and that
    query alone, so no query sees another's statistics (see ``reptile-transductive``).

    A target with another number of classes than meta-training (a transfer, e.g. 5-way miniImageNet to 2-way
    chest X-rays) adapts the meta-learned backbone under a zero-initialised head, from fresh Adam moments: the
    carried ones belong to the other head's shape, and carried backbone moments beside fresh head ones would
    share one step count, with which a fresh head's first steps are ~30x the step size (beta1 = 0).
    """

    name = "reptile"
    description = "Reptile: first-order meta-learning toward adapted weights, non-transductive (Nichol et al. 2018)"
    Hparams = ReptileHparams
    # each scored step costs one forward of (support + 1 query) per query when not transductive: on the chest X-rays
    # (200 support images, 84x84) the seven default scored steps made one trial's evaluation take 444 s on one CPU
    # thread, over 2 h for the row's 20 trials; three scored steps are about 0.6 of that. On miniImageNet the 4 of
    # Omniglot (5w1s: 450 84x84 images a scored step, beside 50 Adam steps on 5) are about 0.65 of the 7 defaults'
    presets = {"synthetic": {"eval_steps": 10, "report_steps": "0,5"}, "omniglot": {"report_steps": "0,1,10"},
               "miniimagenet": {"report_steps": "0,1,10"}, "xray": {"report_steps": "0,10"}}
    # synthetic quick: 30 meta-iterations score 0.856 (0.863 transductive) on tests/test_methods.py's episodes, 50
    # scored 0.868 (0.881) in 1.7x the time
    budgets = {"default": {"quick": 100, "paper": 100000}, "synthetic": {"quick": 30, "paper": 100000},
               "omniglot": {"quick": 600, "paper": 100000}}
    # 600 meta-iterations instead of 100,000: a 3x larger inner Adam step gets further in so few
    quick_presets = {"omniglot": {"inner_lr": 3e-3}}
    # --budget paper where the paper's recipe changes with the setting: its Appendix A, Tables 3 and 4, whose
    # hparams the published Table 1 and 2 figures used (openai/supervised-reptile issue 10: the paper's hparams were
    # made simpler, with its results, after that code's README commands had been written; its PRs 17 and 18 brought
    # the README in line, issue 15: 5-shot miniImageNet is the same recipe with or without transduction). 20-way
    # Omniglot: Adam step 0.0005, 10 steps on batches of 20, 200,000 iterations, tested on batches of 10. At 5 ways
    # the test-time batches are 5 images, so 5-shot tasks (25 images) adapt on a fifth of their support set a step.
    # miniImageNet: 8 steps on tasks of 15 images a class; tested on batches of 5 (1-shot: the whole support set)
    # or 15 (5-shot). The README's earlier, searched commands (e.g. 20-way: step 0.00046, 12 steps of 15 from 9 a
    # class, meta-batch 3, 97 test steps) are no paper figure's recipe
    paper_settings = {
        "omniglot": {"5w5s": {"eval_batch": 5}, **{
            setting: {"inner_lr": 5e-4, "inner_steps": 10, "inner_batch": 20, "eval_batch": 10, "iterations": 200000}
            for setting in ("20w1s", "20w5s")}},
        "miniimagenet": {"5w1s": {"inner_steps": 8, "train_shots": 15},
                         "5w5s": {"inner_steps": 8, "train_shots": 15, "eval_batch": 15}}}
    transductive = False
    # 2: BatchNorm by the fused kernel outside vmap; 3: the meta-batch's tasks one after the other on the CPU (both
    # move the numbers by float rounding); 4: on the CPU the convolution weights stay channels-last after every inner
    # step (the one-input-channel first weight fell back to the default layout, and every later layer's input with
    # it): float rounding again; the Omniglot 5w1s quick row's fit took 140 s instead of 878 s, its
    # evaluation 557 s instead of 1891 s (CPU, one thread, beside another fit)
    version = "4"
    #: results written before ``eval_batch`` existed adapted on the whole support set at every step
    later_hparams = {"eval_batch": 0}
    not_recipe = frozenset({"report_steps"})

    def __init__(self, hparams: ReptileHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self._generator = generator
        self.backbone = build_backbone(hparams.backbone, in_shape, generator, norm="batch")
        self.model: nn.Module | None = None
        self.optimizer = Adam(hparams.inner_lr, beta1=0.0)

    def prepare(self, ways: int) -> None:
        self._build(ways)

    def _build(self, ways: int) -> nn.Module:
        if self.model is None:
            self.model = nn.Sequential(self.backbone, linear_head(self.backbone.out_features, ways, self._generator))
            self.model.to(self.device)
            self.moments = AdamMoments(params_of(self.model)).to(self.device)
            self.ways = ways
        elif ways != self.ways:
            raise UserError(f"this Reptile model was built for {self.ways}-way tasks, not {ways}-way")
        return self.model

    def _start_state(self, ways: int):
        """The Adam state an adaptation to ``ways`` classes starts from: the carried one, or fresh (``None``)."""
        return self.moments.state() if self.hparams.carry_moments and ways == self.ways else None

    def _adapt_task(self, params: Params, state, xb: Tensor, yb: Tensor) -> tuple[Params, Params, Params]:
        """Inner loop over ``xb: float[steps, B, C, H, W]`` minibatches of one task: (weights, m, v)."""
        batches = ((xb[s], yb[s]) for s in range(xb.shape[0]))
        adapted, (_, m, v) = last(inner_loop(self.model, params, batches, self.optimizer, first_order=True,
                                             state=state, with_state=True))
        return adapted, m, v

    def _adapt_tasks(self, params: Params, state, xb: Tensor, yb: Tensor, loop: bool) -> tuple[Params, Params, Params]:
        """:meth:`_adapt_task` for each task of ``xb: float[T, steps, B, C, H, W]``, stacked on a leading ``T`` axis:
        vmapped over the tasks, or (``loop``) one task after the other, the same computation; on the CPU the loop
        is the faster (vmapped convolutions of per-task weights are grouped ones there: a Reptile meta-iteration
        took 0.78x the time as a loop, Omniglot 5-way tasks of 10-image steps, one thread, 2026-12-02)."""
        if not loop:
            return vmap(self._adapt_task, in_dims=(None, None, 0, 0))(params, state, xb, yb)
        each = [self._adapt_task(params, state, xb[t], yb[t]) for t in range(xb.shape[0])]
        return tuple({k: torch.stack([e[i][k] for e in each]) for k in each[0][i]} for i in range(3))

    def fit(self, ctx: FitContext) -> None:
        hp, ways = self.hparams, ctx.spec.ways
        model = self._build(ways)
        model.train()
        per_task = ways * hp.train_shots
        labels = torch.arange(ways).repeat_interleave(hp.train_shots)
        for it in ctx.loop("reptile meta-training"):
            idx = sample_indices(ctx.source, ways, hp.train_shots, ctx.generator, n=hp.meta_batch).flatten(1)
            # each inner step draws its own `inner_batch` images of the task (without replacement within the step;
            # Nichol et al.'s code takes consecutive batches of shuffled passes instead, as eval_batch does)
            order = torch.rand(hp.meta_batch, hp.inner_steps, per_task, generator=ctx.generator).argsort(-1)
            pick = order[..., : hp.inner_batch]  # [T, steps, B]
            rows = torch.arange(hp.meta_batch).view(-1, 1, 1)
            xb = ctx.source.gather(idx[rows, pick].to(ctx.device))
            yb = labels[pick].to(ctx.device)
            params = detached(params_of(model))
            adapted, m, v = self._adapt_tasks(params, self._start_state(ways), xb, yb, loop=ctx.device.type == "cpu")
            if hp.carry_moments:
                self.moments.update(hp.inner_steps, {k: t.mean(0) for k, t in m.items()},
                                    {k: t.mean(0) for k, t in v.items()})
            frac = it / max(ctx.iterations - 1, 1)
            epsilon = hp.meta_step + frac * (hp.meta_step_final - hp.meta_step)
            with torch.no_grad():
                for k, p in params_of(model).items():
                    p.add_(epsilon * (adapted[k].mean(0) - p))
            ctx.count(hp.meta_batch, hp.meta_batch * hp.inner_steps * hp.inner_batch)

    def predict(self, model: nn.Module, params: Params, support_x: Tensor, query_x: Tensor, episodes: int = 1) -> Tensor:
        """``model`` with ``params`` on the queries, each in a batch with the support set alone (non-transductive
        BatchNorm statistics), vmapped over the queries in passes of at most :data:`PREDICT_VALUES` input values
        shared by the ``episodes`` this is vmapped over (and on the CPU of at most :data:`CPU_PASS_QUERIES`
        queries)."""

        def one(q: Tensor) -> Tensor:
            return forward(model, params, torch.cat([support_x, q.unsqueeze(0)]))[-1]

        per_pass = max(1, PREDICT_VALUES // (support_x[0].numel() * (len(support_x) + 1) * episodes))
        if support_x.device.type == "cpu":
            per_pass = min(per_pass, CPU_PASS_QUERIES)
        return torch.cat([vmap(one)(part) for part in query_x.split(per_pass)])

    def _eval_picks(self, support_x: Tensor) -> Tensor | None:
        """The support images of every evaluation step, ``int64[eval_steps, eval_batch]`` on the support set's
        device, from the episode's own generator; ``None`` when every step takes the whole support set."""
        hp, n = self.hparams, len(support_x)
        if not 0 < hp.eval_batch < n:
            return None
        # one salt for both variants: the same fit adapts alike whether its queries are then scored transductively
        picks = cycled_batches(n, hp.eval_batch, hp.eval_steps, episode_generator(support_x, "reptile"))
        return picks.to(support_x.device)

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        model = self._target_model(ways)
        model.train()
        wanted = report_steps(self.hparams.report_steps, self.hparams.eval_steps)
        picks = self._eval_picks(support_x)
        batches = ([(support_x, support_y)] * self.hparams.eval_steps if picks is None
                   else [(support_x[p], support_y[p]) for p in picks])
        loop = inner_loop(model, detached(params_of(model)), batches, self.optimizer, True,
                          state=self._start_state(ways))
        for step, params in enumerate(loop):
            if step in wanted:
                params = detached(params)
                yield at_step(step, lambda query_x, p=params: self.predict(model, p, support_x, query_x))

    def adapt_batch(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        """:meth:`adapt` for ``E`` episodes at once (``float[E, S, C, H, W]``, ``int64[E, S]``): each episode has
        its own copy of the parameters and of the Adam moments (``[E, ...]``, all starting from the same
        ones), each inner step is one call of the per-episode step vmapped over the episodes, and
        :meth:`predict` is vmapped over them too (the non-transductive one vmaps over queries inside);
        the predictors map ``float[E, Q, C, H, W]`` to ``float[E, Q, ways]``, at :meth:`adapt`'s steps."""
        if len(support_x) == 1:
            # a chunk of one episode (the CPU's chunk for the real datasets) is adapt itself: on the CPU the vmapped
            # convolutions are slower than adapt's, and in float32 Adam's first steps from fresh moments (near sign
            # steps) turn their other rounding into other accuracies. Nor does scratch's grouped network (a chunk's
            # networks as one WideConv4) pay here: it gave the same logits bit for bit, but 8 Omniglot 5w1s episodes'
            # inner steps took 0.9-1.2x the time of one by one on the idle machine (one thread, 2026-12-03; Reptile's
            # functional steps have none of the per-episode model building it saves scratch) and evaluating 16
            # episodes 1.2x as long transductively, beside two other jobs
            yield from as_chunk_of_one(self.adapt(support_x[0], support_y[0], ways))
            return
        model = self._target_model(ways)
        model.train()
        hp, episodes = self.hparams, len(support_x)
        wanted = report_steps(hp.report_steps, hp.eval_steps)
        start = detached(params_of(model))
        t, m, v = self._start_state(ways) or self.optimizer.init(start)
        params, m, v = ({k: x.expand(episodes, *x.shape) for k, x in d.items()} for d in (start, m, v))

        def one_step(t: int, p: Params, m: Params, v: Params, x: Tensor, y: Tensor) -> tuple[Params, Params, Params]:
            adapted, (_, m, v) = last(inner_loop(model, p, [(x, y)], self.optimizer, True, state=(t, m, v),
                                                 with_state=True))
            return adapted, m, v

        predict = vmap(functools.partial(self.predict, model, episodes=episodes))
        picks = [self._eval_picks(x) for x in support_x]
        picks = None if picks[0] is None else torch.stack(picks)  # [E, eval_steps, eval_batch]: each episode's own
        rows = torch.arange(episodes, device=support_x.device).unsqueeze(1)
        for step in range(hp.eval_steps + 1):
            if step:
                x, y = support_x, support_y
                if picks is not None:
                    x, y = support_x[rows, picks[:, step - 1]], support_y[rows, picks[:, step - 1]]
                # the step count is Adam's bias correction, shared by every episode: a constant of the vmapped step
                params, m, v = vmap(functools.partial(one_step, t))(params, m, v, x, y)
                params, t = detached(params), t + 1
            if step in wanted:
                yield at_step(step, lambda query_x, p=params: predict(p, support_x, query_x))


@METHODS.register
class ReptileTransductive(Reptile):
    """Reptile evaluated transductively: all queries share one batch, hence BatchNorm statistics."""

    name = "reptile-transductive"
    description = "Reptile with transductive evaluation (queries batched together), as the paper's headline numbers"
    transductive = True

    def predict(self, model: nn.Module, params: Params, support_x: Tensor, query_x: Tensor, episodes: int = 1) -> Tensor:
        return forward(model, params, query_x)
