"""The Method protocol, its registry and the context ``fit`` receives (hparams: :mod:`mtbench.methods.hparams`).

A method is a class with:

* ``name`` / ``description`` — registry name and a one-line summary;
* ``Hparams`` — a frozen dataclass whose defaults are the paper's settings, with per-dataset
  overrides in ``presets`` (the paper's settings for that dataset) and fit lengths in ``budgets``,
  ``paper_settings`` where the paper's recipe also changes with the setting (20-way Omniglot), applied by
  the ``paper`` budget (built in :mod:`mtbench.methods.hparams`);
  ``quick_presets`` (per dataset) are the deviations the ``quick`` budget makes to get far in a
  few CPU minutes (e.g. a larger step size), recorded like every hparam in the result;
* ``transductive`` — whether predictions for a query depend on the other queries;
* ``compilable`` — whether ``--compile`` may compile its networks: true for a method that calls
  its ``nn.Module`` s directly, false (the default) for one that calls them through
  ``torch.func.functional_call`` under ``vmap``/``grad`` (MAML, Reptile). ``compile_modules()``
  compiles every module of ``modules()`` in place (``nn.Module.compile``, so ``state_dict`` keys and
  ``--save`` checkpoints are unchanged) and sets ``compiled``; a method that builds networks later
  (per episode) compiles them itself when ``compiled`` is set;
* ``backbone`` — the feature extractor, an ``nn.Module`` attribute built in ``__init__``; every
  method has one, and ``transferable`` (default ``("backbone",)``) names the modules that another
  method may take from this one's checkpoint (``--init``: a meta-then-transfer pipeline);
* ``variant(record)`` — a classmethod: what sets a configuration apart in a leaderboard (``"1st
  order"`` for FOMAML), stored as the result's ``method.variant``; ``""`` by default;
* ``fit(ctx)`` — (meta-)training on the source split, may do nothing;
* ``adapt(support_x, support_y, ways)`` — yields a predictor after each adaptation step
  (a non-iterative method yields once; one with many steps may yield at chosen steps, labelled
  with :func:`at_step`); a predictor maps ``float[Q, C, H, W]`` to logits
  ``float[Q, ways]``. ``adapt`` runs under ``torch.no_grad()``; a method that needs autograd
  enables it itself, and must not leave state behind between episodes;
* ``predict_batch(support_x, support_y, query_x, ways)`` — optional (``None`` by default), for a
  method whose ``adapt`` yields a single predictor and whose predictions for one episode do not
  depend on the other episodes: that predictor's logits for ``E`` episodes at once, ``float[E, S,
  C, H, W]``, ``int64[E, S]``, ``float[E, Q, C, H, W]`` -> ``float[E, Q, ways]``, under
  ``torch.no_grad()``. The evaluator then scores chunks of episodes in one call each instead of
  calling ``adapt`` per episode (its adaptation time is the chunk's, support and queries together);
* ``adapt_batch(support_x, support_y, ways)`` — optional (``None`` by default), for a method whose
  episodes adapt independently of each other: ``adapt`` for ``E`` episodes at once, ``float[E, S, C,
  H, W]``, ``int64[E, S]``, yielding after each step a predictor of ``float[E, Q, C, H, W]`` ->
  ``float[E, Q, ways]``; every episode must get what ``adapt`` gives it (tested per method). It is
  preferred to ``predict_batch`` when a method has both.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mtbench.data import Split
from mtbench.data.episodes import EpisodeSpec
from mtbench.core.errors import UserError
from mtbench.core.registry import Registry
from mtbench.methods.hparams import for_dataset, paper_setting

Predictor = Callable[[Tensor], Tensor]
_T = TypeVar("_T")


def at_step(step: int, predictor: Predictor) -> Predictor:
    """Label a predictor with its adaptation step, for methods that do not yield after every step.

    The evaluator records ``step`` in ``accuracy.by_step``; unlabelled predictors count 0, 1, 2, ...
    """
    predictor.step = step  # type: ignore[attr-defined]
    return predictor


def as_chunk_of_one(predictors: Iterator[Predictor]) -> Iterator[Predictor]:
    """``adapt``'s predictors of one episode as ``adapt_batch``'s for a chunk of that one episode (``float[1, Q, ...]``
    -> ``float[1, Q, ways]``), each at its step: for a method whose vmapped path is slower than ``adapt`` at one
    episode (MAML, Reptile on the CPU)."""
    for i, predictor in enumerate(predictors):
        yield at_step(getattr(predictor, "step", i), lambda query_x, p=predictor: p(query_x[0]).unsqueeze(0))


class FitHook(typing.Protocol):
    """What the run layer plugs into a fit to save and resume it (``mtbench run --checkpoint-every / --resume``,
    :mod:`mtbench.run.resume`); :meth:`FitContext.loop` calls it, a method never does."""

    def start(self, ctx: FitContext, stage: int, total: int) -> int:
        """A loop of ``total`` iterations begins (the ``stage``-th of the fit): the iteration to start from
        (``total`` skips a loop a resumed fit had finished; the saved state is restored in the loop it was saved in)."""

    def boundary(self, ctx: FitContext, stage: int, iteration: int) -> None:
        """Iterations ``0 .. iteration - 1`` of the loop are done and the next has not begun: the state is whole."""


@dataclass
class FitContext:
    """What ``Method.fit`` gets: the source split on the device, the protocol, the budget, a generator.

    Attributes:
        source: the split to (meta-)train on, already on ``device``.
        spec: the evaluation protocol (methods match its ways/shots by default).
        iterations: how many (meta-)iterations the budget allows.
        generator: CPU generator for every random draw of the fit (episodes, init, augmentation).
        device: where the computation runs.
        progress: show a progress bar.
        unlabelled: target-domain images without their labels (the dataset's ``unlabelled_split``,
            one class named ``unlabelled``), or ``None``; never the evaluation images.
        notes: what the fit wants the result to say (``note``), e.g. a fallback it took.
        hook: set by the run layer to save the fit's state at iteration boundaries and resume it; ``None``
            leaves :meth:`loop` a plain range.
        until: ``--until``: end the budget's loops (those over ``iterations``) after this many iterations, the
            schedules still those of all ``iterations`` (a partial fit, to be continued); ``None``: run them whole.
        reached: where the last budget loop ended (``iterations``, or ``until`` when it stopped the fit short).
        deadline: ``--fit-minutes``: the ``time.monotonic()`` after which a budget loop stops at its next iteration
            boundary (once it has run one), setting ``until`` to that iteration; ``None``: no time limit.
        tracked: the fit's state outside the method's modules, registered with :meth:`track`.
        stage: how many loops the fit has entered so far.
        in_loop: inside an iteration of :meth:`loop` (the run layer defers Ctrl-C to its end).

    A fit that can be saved and resumed draws only from ``generator`` (or generators it :meth:`track` s),
    runs its iterations in :meth:`loop` (one or more loops in a fixed order, e.g. pre-training then
    episodes), keeps its learned state in the method's modules and registers everything else that
    lives across iterations with :meth:`track` (optimisers, LR schedulers, a head trained then dropped).
    """

    source: Split
    spec: EpisodeSpec
    iterations: int
    generator: torch.Generator
    device: torch.device
    progress: bool = True
    unlabelled: Split | None = None
    tasks: int = 0
    images: int = 0
    notes: list[str] = field(default_factory=list)
    hook: FitHook | None = None
    tracked: list[Any] = field(default_factory=list)
    stage: int = 0
    in_loop: bool = False
    until: int | None = None
    reached: int | None = None
    deadline: float | None = None

    def track(self, obj: _T) -> _T:
        """Register state of the fit that is not a module of the method, so that a saved fit keeps it: an
        optimiser or LR scheduler (``state_dict``), a local ``nn.Module`` (a pre-training head), another
        ``torch.Generator`` (``get_state``). Returns ``obj``: ``opt = ctx.track(torch.optim.Adam(...))``."""
        if not (hasattr(obj, "state_dict") or isinstance(obj, torch.Generator)):
            raise TypeError(f"ctx.track takes an object with state_dict() or a torch.Generator, not {type(obj).__name__}")
        self.tracked.append(obj)
        return obj

    def loop(self, desc: str, steps: int | None = None) -> Iterator[int]:
        """Iterate over ``range(iterations)`` (or ``range(steps)``, for a stage of its own) with a progress bar;
        with a :attr:`hook`, from where a resumed fit left off, the state saved at iteration boundaries."""
        total = self.iterations if steps is None else steps
        # --until ends a budget loop early; a loop of its own length (pre-training) always runs whole
        stop = min(total, self.until) if steps is None and self.until is not None else total
        stage, self.stage = self.stage, self.stage + 1
        first = self.hook.start(self, stage, total) if self.hook is not None else 0
        if first > stop:
            raise UserError(f"--until {self.until}: the saved fit is already at iteration {first} of this loop; give "
                            f"--until {first} or more, or drop --until to run the whole fit")
        self.in_loop = True
        try:
            for it in tqdm(range(first, stop), desc=desc, unit="it", disable=not self.progress, initial=first,
                           total=total, mininterval=1.0, dynamic_ncols=True):
                if steps is None and self.deadline is not None and it > first and time.monotonic() >= self.deadline:
                    stop = self.until = it  # out of time: the fit stops here, as --until would stop it
                    break
                if self.hook is not None:
                    self.hook.boundary(self, stage, it)
                yield it
            if self.hook is not None:
                self.hook.boundary(self, stage, stop)
            if steps is None:
                self.reached = stop
        finally:
            self.in_loop = False

    def count(self, tasks: int, images: int) -> None:
        """Record work done, for the tasks/s and images/s figures."""
        self.tasks += tasks
        self.images += images

    def note(self, text: str) -> None:
        """Record something the result must say about this fit (kept in ``fit.notes``)."""
        if text not in self.notes:
            self.notes.append(text)


class Method:
    """Base class of every method; see the module docstring for the protocol."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Hparams: ClassVar[type] = type(None)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    budgets: ClassVar[dict[str, dict[str, int]]] = {"default": {"quick": 0, "paper": 0}}
    quick_presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the paper's recipe where it changes with the setting (dataset -> ``"20w1s"`` -> hparams, and ``iterations``
    #: where its length differs from ``budgets``'): ``--budget paper`` fits it, the quick budget keeps the presets
    paper_settings: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    transductive: ClassVar[bool] = False
    compilable: ClassVar[bool] = False
    version: ClassVar[str] = "1"
    compiled: bool = False
    #: the feature extractor (an ``nn.Module`` mapping images to ``[N, out_features]``), built in ``__init__``
    backbone: nn.Module
    #: the modules another method may take from this one's checkpoint (``--init``): the backbone by default
    transferable: ClassVar[tuple[str, ...]] = ("backbone",)
    #: ``adapt``'s logits for a batch of episodes at once, or ``None``; see the module docstring
    predict_batch: Callable[[Tensor, Tensor, Tensor, int], Tensor] | None = None
    #: ``adapt`` for a batch of episodes at once, every step, or ``None``; see the module docstring
    adapt_batch: Callable[[Tensor, Tensor, int], Iterator[Predictor]] | None = None
    #: the episodes a chunk of the batched path may hold where that is more than one forward pass's images, or
    #: ``None`` (one pass's worth): for a batched path that embeds its images in passes itself
    #: (:func:`~mtbench.core.runtime.in_passes`) and then repeats cheap steps for every episode at once (heads
    #: fine-tuned on frozen features), or whose steps on few images are overhead-bound (scratch on the CPU),
    #: so that more episodes share each step
    chunk_episodes: int | None = None
    #: hparams added after results were written, with the value a result without them ran as (their default,
    #: which reproduces the older code): a leaderboard reads such a result as having it, so that a new fit seed
    #: joins the row of the older ones
    later_hparams: ClassVar[dict[str, Any]] = {}
    #: hparams that act on one device type only (name -> device type, e.g. ``{"cuda_graph": "cuda"}``): a result
    #: that ran on another device type is read without them, so that results differing in one join a row
    device_hparams: ClassVar[dict[str, str]] = {}
    #: hparams that choose how a recipe runs or what it reports, not what it computes (``task_batching``,
    #: ``report_steps``; ``device_hparams`` are not a recipe's either): a result is checked against a recipe
    #: (``--budget paper``'s) without them (:meth:`recipe_hparams`)
    not_recipe: ClassVar[frozenset[str]] = frozenset()
    #: whether the fit seed (``--fit-seed``) can change the method's numbers: ``False`` for a method that fits
    #: nothing and draws whatever it draws from each episode's own generator (scratch), whose every fit seed would
    #: score what fit seed 0 does; ``mtbench run`` refuses another fit seed for it, and sweeps and ``mtbench
    #: official`` run its fit seed 0 alone (:meth:`fit_seed_of`)
    fit_seeded: ClassVar[bool] = True

    @classmethod
    def fit_seed_of(cls, seed: int) -> int:
        """The fit seed a planned run of this method takes for ``seed``: ``seed``, or 0 when no fit seed changes
        its numbers (:attr:`fit_seeded`), so that a plan over several fit seeds runs it once."""
        return seed if cls.fit_seeded else 0

    def __init__(self, hparams: Any, in_shape: tuple[int, int, int], generator: torch.Generator,
                 device: torch.device) -> None:
        self.hparams = hparams
        self.in_shape = in_shape
        self.device = device

    def prepare(self, ways: int) -> None:
        """Build whatever depends on the number of ways (heads); called before a checkpoint loads."""

    def modules(self) -> dict[str, nn.Module]:
        """The learned state: every ``nn.Module`` attribute, by attribute name (saved by ``--save``)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, nn.Module)}

    def compile_modules(self) -> None:
        """``--compile``: compile every module in place with ``nn.Module.compile`` (only for ``compilable`` methods)."""
        self.compiled = True
        for module in self.modules().values():
            module.compile()

    def fit(self, ctx: FitContext) -> None:
        """(Meta-)train on ``ctx.source``; the default does nothing."""

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Iterator[Predictor]:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def variant(cls, record: Mapping[str, Any]) -> str:
        """What sets this configuration apart in a leaderboard, e.g. ``"1st order"`` for FOMAML; ``""`` for none.

        ``record`` is a result document (its ``method``, ``dataset`` and ``budget`` sections are
        read). The runner stores the answer as ``method.variant`` and leaderboards show it after the
        method's name, so two rows of one method with different variants never look alike.
        """
        return ""

    @classmethod
    def recipe_hparams(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """``hparams`` without those that are not a recipe's (``not_recipe``, ``device_hparams``): what two results
        are compared on when the question is whether they fitted and scored the same way."""
        return {k: v for k, v in hparams.items() if k not in cls.not_recipe and k not in cls.device_hparams}

    @classmethod
    def iterations_for(cls, budget: str | int, dataset: str, setting: str | None = None) -> int:
        """Fit iterations for ``budget`` (``"quick"``, ``"paper"`` or a number) on ``dataset``, in ``setting``
        (``"20w1s"``; the paper's own length there, where ``paper_settings`` gives one)."""
        if isinstance(budget, int) or str(budget).isdigit():
            value = int(budget)
            if value < 0:
                raise UserError(f"--budget must be quick, paper or a whole number ≥ 0, got {budget}")
            return value
        if budget == "paper" and "iterations" in (recipe := paper_setting(cls, dataset, setting)):
            return int(recipe["iterations"])
        table = for_dataset(cls.budgets, dataset, cls.budgets.get("default", {}))
        if budget not in table:
            raise UserError(f"--budget must be one of {', '.join(sorted(table))} or a number of iterations, got '{budget}'")
        return table[budget]


#: the built-in methods are the modules of ``baselines/`` (installed as ``mtbench.baselines``), one file each
METHODS: Registry[type[Method]] = Registry("methods", builtins=("mtbench.baselines.*",))
