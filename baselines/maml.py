"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017), on ``torch.func``."""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from mtbench.methods import taskbatched
from mtbench.methods.backbones import NORMS, Conv4, build_backbone, linear_head, ZeroHeadForOtherWays
from mtbench.data.episodes import sample_indices
from mtbench.methods.graphs import GraphedStep, capturable_adam
from mtbench.methods.functional import Params, accuracy, channels_last, detached, forward, last, params_of, sgd_inner_loop
from mtbench.methods import METHODS, FitContext, Method, Predictor, as_chunk_of_one, non_negative, positive
from mtbench.core.errors import UserError


@dataclass(frozen=True)
class MAMLHparams:
    """Defaults: the paper's Omniglot 5-way settings (Finn et al. 2017, section 5.2 and its code).

    Attributes:
        backbone: registered backbone name (built with batch-statistics BatchNorm).
        inner_lr: inner-loop step size alpha (0.4 for Omniglot 5-way).
        inner_steps: inner steps during meta-training (1 for Omniglot 5-way).
        eval_steps: inner steps at evaluation (3 in the paper).
        meta_batch: tasks per meta-update (32 for Omniglot 5-way).
        meta_lr: Adam step size beta of the meta-update.
        train_queries: query images per class of a training task; 0 = the evaluation shots,
            as the paper's code does.
        first_order: drop second-order terms of the meta-gradient (FOMAML).
        head_only: adapt only the linear head in the inner loop, the backbone being meta-learned
            but never adapted: ANIL (Raghu, Raghu, Bengio & Vinyals, ICLR 2020).
        task_batching: how the tasks of a meta-batch are computed (the same meta-gradient, checked
            in float64): ``bmm`` as one network with per-task weights whose convolutions are
            batched matrix products (:mod:`mtbench.methods.taskbatched`; Conv4 only), ``vmap`` through
            ``torch.func.vmap``, ``loop`` one task after the other. ``auto`` picks per device from
            the measurements of ``mtbench bench`` (see :data:`AUTO_BATCHING`); the result records
            the choice.
        cuda_graph: on a CUDA device, replay the meta-step as a CUDA graph after 3 eager steps
            (:mod:`mtbench.methods.graphs`). No effect on the CPU.
        adapt_norm: whether the inner steps move BatchNorm's scale and offset, as learn2learn's and most PyTorch
            ports' do. Finn et al.'s code does not: its ``tf_layers.batch_norm`` keeps its offset outside the
            weights the inner steps move (meta-learned only) and has no scale. ``false`` leaves both to the
            meta-update.
        inner_loss: the support loss the inner steps descend: ``mean``, the cross-entropy averaged over the
            support set (learn2learn and most PyTorch ports), or ``sum``, Finn et al.'s code's: the per-example
            cross-entropy divided by the shots (``xent`` in its ``utils.py``), a vector that ``tf.gradients``
            differentiates as its sum, which is ``ways`` times the mean. Their step of 0.4 at 5 ways and their 0.1
            at 20 ways are both a step of 2.0 on the mean. The inner loop being plain SGD, ``sum`` is run as the
            mean with its step multiplied by the ways.
        init: the network's initialisation (:func:`mtbench.methods.backbones.init_parameters`): ``xavier``,
            as Finn et al.'s code (but for its Omniglot head, drawn from N(0, 1)) and learn2learn initialise MAML's
            Conv4, PyTorch's ``default``, or ``finn``, Finn et al.'s Omniglot code's (Xavier convolutions, the head
            from N(0, 1), BatchNorm scales at 1). From PyTorch's default MAML starts slower: 0.287 against 0.440 after 3
            test steps at meta-iteration 0, 0.689 against 0.767 at 100 (Omniglot 5w1s, 100 episodes;
            leaderboards/reproduction/, shown on reports/reproduction.md).
    """

    backbone: str = "conv4"
    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_steps: int = 3
    meta_batch: int = 32
    meta_lr: float = 1e-3
    train_queries: int = 0
    first_order: bool = False
    head_only: bool = False
    task_batching: Literal["auto", "bmm", "vmap", "loop"] = "auto"
    cuda_graph: bool = True
    adapt_norm: bool = True
    inner_loss: Literal["mean", "sum"] = "mean"
    init: Literal["xavier", "default", "finn"] = "xavier"

    def __post_init__(self) -> None:
        positive("inner_lr", self.inner_lr)
        positive("meta_lr", self.meta_lr)
        positive("meta_batch", self.meta_batch)
        non_negative("train_queries", self.train_queries)
        for name in ("inner_steps", "eval_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--hp {name}={getattr(self, name)}: must be ≥ 1")


# task_batching=auto: the fastest meta-gradient per device type in `mtbench bench` (second order, Conv4,
# Omniglot 5w1s); the measurements are on the throughput page (reports/throughput.md)
AUTO_BATCHING = {"cpu": "loop", "cuda": "vmap"}


@METHODS.register
class MAML(ZeroHeadForOtherWays, Method):
    """MAML (Finn et al. 2017): learn an initialisation that adapts in a few gradient steps.

    Second-order by default (``first_order=true`` for FOMAML; ``head_only=true`` for ANIL). The inner loop is
    :func:`mtbench.methods.functional.sgd_inner_loop`, shared by meta-training and evaluation, and the
    meta-batch is vmapped over tasks. BatchNorm uses batch statistics, as in the paper, so
    predictions on the query set use its statistics: transductive.
    """

    name = "maml"
    description = "MAML: a learned initialisation adapted by gradient steps (Finn et al. 2017)"
    Hparams = MAMLHparams
    # miniImageNet: the paper's (32-filter Conv4, alpha 0.01, 5 steps in training, 10 at test, 15 queries)
    presets = {"synthetic": {"inner_lr": 0.4, "meta_batch": 8},
               "miniimagenet": {"backbone": "conv4-32", "inner_lr": 0.01, "inner_steps": 5, "eval_steps": 10,
                                "meta_batch": 4, "train_queries": 15},
               # a 200-image target: more steps than a 5-shot task, the curve shows where it levels off
               "xray": {"eval_steps": 25}, "xray3": {"eval_steps": 25}}
    # synthetic: version 3 scores 0.852 on tests/test_methods.py's episodes after 30 meta-iterations (0.876 after 50)
    budgets = {"default": {"quick": 100, "paper": 60000}, "synthetic": {"quick": 30, "paper": 60000},
               "omniglot": {"quick": 700, "paper": 60000},
               "miniimagenet": {"quick": 500, "paper": 60000}}
    # quick on miniImageNet: one inner step in training and 2 tasks per meta-batch, about a third of the
    # paper's cost per iteration, and the per-task loop, the faster meta-gradient on a CPU at 84 px
    quick_presets = {"miniimagenet": {"inner_steps": 1, "meta_batch": 2, "task_batching": "loop"}}
    # --budget paper at 20 ways: Finn et al.'s 20-way Omniglot recipe (section 5.2 and the command of their code's
    # README: 5 inner steps of 0.1, meta-batch 16); 10 steps at test, as their code tests Omniglot (every step is
    # scored, so step 5 is in the result's by-step accuracies too)
    paper_settings = {"omniglot": {setting: {"inner_lr": 0.1, "inner_steps": 5, "meta_batch": 16, "eval_steps": 10}
                                   for setting in ("20w1s", "20w5s")}}
    transductive = True
    # 2: Xavier initialisation by default (``init``); BatchNorm by the fused kernel outside vmap (float rounding)
    # 3: on the CPU, convolution weights in the default layout, not channels-last (float rounding)
    # 4: on the CPU, adapted channels-last at evaluation (float rounding: 10 of 600 real Omniglot 5w1s episodes
    # scored one query apart after a 60-iteration fit, the mean 7e-5 apart), evaluation 2.4x as fast; and
    # first-order meta-training channels-last there, 1.6x as fast
    version = "4"
    # CUDA graphs are a CUDA matter: on the CPU a result with or without the hparam ran the same code
    device_hparams = {"cuda_graph": "cuda"}
    # results saved before these existed adapted the norms and descended the mean
    later_hparams = {"adapt_norm": True, "inner_loss": "mean"}
    not_recipe = frozenset({"task_batching"})
    #: what ``task_batching=auto`` picks per device type (read by ``mtbench bench`` too)
    AUTO_BATCHING = AUTO_BATCHING

    @classmethod
    def variant(cls, record):
        """FOMAML is a row of its own: ``1st order``."""
        return "1st order" if record["method"]["hparams"].get("first_order") else ""

    def __init__(self, hparams: MAMLHparams, in_shape, generator, device) -> None:
        super().__init__(hparams, in_shape, generator, device)
        self._generator = generator
        # on the CPU the default weight layout for second-order meta-steps: channels-last weights made them 0.80x
        # as fast (same-process measurement against the learn2learn-style loop, whose weights are contiguous); but
        # channels-last for first-order ones, 1.6x as fast (meta-steps of 16 Omniglot 5-way and 20-way tasks, CPU
        # AMD, one thread, 2026-12-02)
        layout = torch.device(device).type != "cpu" or hparams.first_order
        self.backbone = build_backbone(hparams.backbone, in_shape, generator, init=hparams.init, norm="batch",
                                       channels_last=layout)
        batching = hparams.task_batching
        if batching == "auto":
            batching = AUTO_BATCHING.get(torch.device(device).type, "loop")
        if batching == "bmm" and not isinstance(self.backbone, Conv4):
            if hparams.task_batching == "bmm":
                raise UserError(f"--hp task_batching=bmm computes Conv4 backbones only, not {hparams.backbone}; "
                                f"use task_batching=vmap or loop")
            batching = "vmap"
        self.hparams = dataclasses.replace(hparams, task_batching=batching)  # what ran, for the result
        self.model: nn.Module | None = None

    def prepare(self, ways: int) -> None:
        self._build(ways)

    def _build(self, ways: int) -> nn.Module:
        if self.model is None:
            head = linear_head(self.backbone.out_features, ways, self._generator, self.hparams.init)
            self.model = nn.Sequential(self.backbone, head).to(self.device)
            self.ways = ways
            # the same names in a zero-headed target model, which shares the backbone
            self._norm_params = {f"{name}.{p}" for name, module in self.model.named_modules()
                                 if isinstance(module, NORMS) for p, _ in module.named_parameters(recurse=False)}
        elif ways != self.ways:
            raise UserError(f"this MAML model was built for {self.ways}-way tasks, not {ways}-way")
        return self.model

    def adapted(self, params: Params) -> list[str] | None:
        """The parameters the inner steps move: all (``None``); with ``head_only`` (ANIL) the head's ("1."); with
        ``adapt_norm=false`` all but the norm layers'."""
        if self.hparams.head_only:
            return [k for k in params if k.startswith("1.")]
        if not self.hparams.adapt_norm:
            return [k for k in params if k not in self._norm_params]
        return None

    def inner_loop(self, params: Params, x: Tensor, y: Tensor, steps: int,
                   model: nn.Module | None = None) -> Iterator[Params]:
        model = model or self.model
        return sgd_inner_loop(model, params, x, y, steps, self.inner_step(model), self.hparams.first_order,
                              self.adapted(params))

    def inner_step(self, model: nn.Module) -> float:
        """The inner step on the mean support loss: ``inner_lr``, times the ways for ``inner_loss=sum``
        (``model`` ends in its ``ways``-output head)."""
        hp = self.hparams
        return hp.inner_lr * (model[-1].out_features if hp.inner_loss == "sum" else 1)

    def task_loss(self, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
        """Query loss and accuracy after adapting ``params`` on the support set of one task."""
        adapted = last(self.inner_loop(params, sx, sy, self.hparams.inner_steps))
        logits = forward(self.model, adapted, qx)
        return torch.nn.functional.cross_entropy(logits, qy), accuracy(logits, qy)

    def meta_loss(self, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        """Mean query loss over a meta-batch: ``sx: float[T, S, C, H, W]`` etc."""
        hp = self.hparams
        if hp.task_batching == "bmm":
            return taskbatched.meta_loss(self.model, params, sx, sy, qx, qy, hp.inner_steps,
                                         self.inner_step(self.model), hp.first_order, self.adapted(params))
        if hp.task_batching == "vmap":
            losses, _ = vmap(self.task_loss, in_dims=(None, 0, 0, 0, 0))(params, sx, sy, qx, qy)
            return losses.mean()
        return torch.stack([self.task_loss(params, *task)[0] for task in zip(sx, sy, qx, qy)]).mean()

    def fit(self, ctx: FitContext) -> None:
        hp, spec = self.hparams, ctx.spec
        model = self._build(spec.ways)
        model.train()
        queries = hp.train_queries or spec.shots
        opt = ctx.track(capturable_adam(model.parameters(), hp.meta_lr, ctx.device))
        labels = torch.arange(spec.ways, device=ctx.device)
        sy = labels.repeat_interleave(spec.shots).expand(hp.meta_batch, -1)
        qy = labels.repeat_interleave(queries).expand(hp.meta_batch, -1)

        def step(idx: Tensor) -> None:
            x = ctx.source.gather(idx)  # [T, ways, per_class, C, H, W]
            sx = x[:, :, : spec.shots].flatten(1, 2)
            qx = x[:, :, spec.shots:].flatten(1, 2)
            loss = self.meta_loss(params_of(model), sx, sy, qx, qy)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        run = GraphedStep(step, ctx.device, enabled=hp.cuda_graph)
        for _ in ctx.loop(f"maml {'1st' if hp.first_order else '2nd'}-order meta-training"):
            idx = sample_indices(ctx.source, spec.ways, spec.shots + queries, ctx.generator, n=hp.meta_batch)
            run(idx)
            ctx.count(hp.meta_batch, idx.numel())
        if ctx.device.type == "cuda":
            ctx.note(f"maml meta-steps ran as {run.mode}, tasks by {hp.task_batching}")

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        model = self._target_model(ways)
        start = detached(params_of(model))
        if support_x.device.type == "cpu":
            # meta-trained in the default layout (the faster one for second-order meta-steps on the CPU), adapted
            # channels-last, which the inner loop keeps: 0.42x the time of its forward passes
            start = channels_last(start)
        for params in self.inner_loop(start, support_x, support_y, self.hparams.eval_steps, model):
            params = detached(params)
            yield lambda query_x, p=params: forward(model, p, query_x)

    def adapt_batch(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:
        """:meth:`adapt` for ``E`` episodes at once (``float[E, S, C, H, W]``, ``int64[E, S]``): each inner step
        is one call of the per-episode step vmapped over the episodes, each with its own copy of the
        parameters (``[E, ...]``) and its own BatchNorm statistics, so every episode gets what :meth:`adapt`
        gives it; the predictors map ``float[E, Q, C, H, W]`` to ``float[E, Q, ways]``."""
        if len(support_x) == 1:
            # a chunk of one episode (the CPU's chunk for the real datasets) is adapt itself: on the CPU the vmapped
            # step over one episode took 1.5-2x adapt's time (mtbench bench --evaluation maml)
            yield from as_chunk_of_one(self.adapt(support_x[0], support_y[0], ways))
            return
        model = self._target_model(ways)
        start = detached(params_of(model))
        params = {k: v.expand(len(support_x), *v.shape) for k, v in start.items()}
        step = vmap(lambda p, x, y: last(self.inner_loop(p, x, y, 1, model)))
        predict = vmap(lambda p, x: forward(model, p, x))
        for i in range(self.hparams.eval_steps + 1):
            if i:
                params = detached(step(params, support_x, support_y))
            yield lambda query_x, p=params: predict(p, query_x)


def reference_meta_loss(model: nn.Module, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor,
                        steps: int, lr: float, first_order: bool = False,
                        adapted: list[str] | None = None) -> Tensor:
    """The textbook MAML meta-loss: a Python loop over the tasks, each adapted by unrolled SGD with
    ``torch.autograd.grad(create_graph=True)`` (``create_graph=False`` for first order).

    The plain reference that :class:`MAML` (``torch.func`` inner loop, tasks vmapped) is checked and
    benchmarked against; same arguments as :meth:`MAML.meta_loss` plus the inner-loop settings.
    ``adapted``: names of the parameters the inner steps move (``None``: all; ANIL: the head's).
    """
    names = list(params)
    moves = [adapted is None or n in adapted for n in names]
    total = sx.new_zeros(())
    for t in range(sx.shape[0]):
        fast = list(params.values())
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, dict(zip(names, fast)), (sx[t],)), sy[t])
            grads = iter(torch.autograd.grad(loss, [p for p, m in zip(fast, moves) if m],
                                             create_graph=not first_order))
            fast = [p - lr * next(grads) if m else p for p, m in zip(fast, moves)]
        total = total + F.cross_entropy(functional_call(model, dict(zip(names, fast)), (qx[t],)), qy[t])
    return total / sx.shape[0]


class MAMLReferenceLoop(MAML):
    """:class:`MAML` with :func:`reference_meta_loss` as its meta-loss (not registered).

    Everything else, sampling, the meta-optimiser and evaluation, is MAML's own, so timing its
    ``fit`` against MAML's measures the batched ``torch.func`` meta-gradient against the per-task
    loop and nothing else.
    """

    name = "maml-reference-loop"
    description = "MAML with the textbook per-task autograd.grad(create_graph=True) meta-loss"

    def meta_loss(self, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        hp = self.hparams
        return reference_meta_loss(self.model, params, sx, sy, qx, qy, hp.inner_steps, self.inner_step(self.model),
                                   hp.first_order, self.adapted(params))


#: the per-task reference loop that ``mtbench bench`` times MAML against, reached through the registry
MAML.ReferenceLoop = MAMLReferenceLoop
