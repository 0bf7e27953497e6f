"""The standardized evaluator: accuracy after every adaptation step, time to adapt, throughput.

Methods with an ``adapt_batch`` or a ``predict_batch`` (see :mod:`mtbench.methods`) are evaluated a chunk
of episodes at a time; every other method, episode by episode through ``adapt``. Every evaluated output is checked:
floating-point logits of shape ``[queries, ways]``, all finite; the first that is not stops the
evaluation with an :class:`OutputError` naming the episode and the adaptation step.
"""

from __future__ import annotations

import math
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from mtbench.core.errors import UserError
from mtbench.core.metrics import mean_ci95
from mtbench.core.runtime import PASS_VALUES, Laps, peak_memory, reset_peak_memory, timer
from mtbench.data.episodes import EpisodeSet
from mtbench.methods import Method, at_step
from mtbench.methods.functional import accuracy
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from mtbench.run.evaluation_state import EvaluationState, Progress

#: bound on the input values (images x C x H x W) of one chunk of episodes on the batched path, by device
#: type (others: the CPU's), never less than one episode: one forward pass's worth (:data:`PASS_VALUES`), as a
#: method's batched path runs its backbone once over the chunk's images; a method that embeds them in passes
#: itself says how many episodes its chunk may hold (``Method.chunk_episodes``)
CHUNK_VALUES = PASS_VALUES


def chunk_capacity(episodes: EpisodeSet, max_values: int | None = None, at_least: int | None = None) -> int:
    """The most episodes one chunk of :func:`episode_chunks` may hold: ``max_values`` input values' worth (default
    :data:`CHUNK_VALUES` of their device, or ``at_least`` episodes' worth where that is more: a method's
    ``chunk_episodes``), at least one episode."""
    spec = episodes.spec
    per_episode = spec.ways * spec.per_class * math.prod(episodes.split.image_shape)
    if max_values is None:
        max_values = max(CHUNK_VALUES.get(episodes.split.device.type, CHUNK_VALUES["cpu"]),
                         (at_least or 0) * per_episode)
    return max(1, max_values // per_episode)


def chunk_bounds(n: int, capacity: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``n`` episodes in order, as few as hold at most ``capacity`` each, sizes
    within one of each other."""
    count = -(-n // capacity)  # ceil: the fewest chunks within the bound
    size, extra = divmod(n, count)
    bounds = [i * size + min(i, extra) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def episode_chunks(episodes: EpisodeSet, max_values: int | None = None,
                   at_least: int | None = None) -> list[tuple[int, int]]:
    """:func:`chunk_bounds` of ``episodes`` within their :func:`chunk_capacity`; a chunk holds at least one episode."""
    return chunk_bounds(len(episodes), chunk_capacity(episodes, max_values, at_least))


class OutputError(UserError):
    """A method returned logits the protocol does not allow (type, shape, NaN or infinite values)."""


def check_logits(name: str, logits: object, shape: tuple[int, ...], where: str) -> torch.Tensor:
    """``logits`` when it is a floating-point tensor of ``shape``; else an :class:`OutputError` saying ``where``."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise OutputError(f"{name} returned {got} {where}; it must return floating-point logits of shape {list(shape)}")
    if tuple(logits.shape) != shape:
        raise OutputError(f"{name} returned logits of shape {list(logits.shape)} {where}; expected {list(shape)} "
                        f"(queries x ways)")
    return logits


def _check_finite(name: str, finite: list[torch.Tensor], where: list[str]) -> None:
    """``finite``: one bool tensor per output (kept on the device until this one check); the first false names
    its ``where``."""
    if not finite:
        return
    flags = torch.cat([f.reshape(-1) for f in finite]).cpu()
    if not bool(flags.all()):
        first = int((~flags).nonzero()[0])
        raise OutputError(f"{name} returned NaN or infinite logits {where[first]}; a method must return finite logits")


Lap = Callable[[], float]  # the seconds of a timed interval, read after the evaluation's final synchronisation


def _seconds(output: object, measured: Lap) -> Lap:
    """The time to take for an output: what the process that ran the method measured, when it says
    (``measured_seconds``, a sandboxed submission's child), else the evaluator's own ``measured``."""
    value = getattr(output, "measured_seconds", None)
    return (lambda: float(value)) if isinstance(value, (int, float)) else measured


def _timed(stream: Iterable[Any], laps: Laps) -> Iterator[tuple[Any, Lap]]:
    """Each predictor of an ``adapt`` stream with the time spent producing it (the time inside ``adapt``),
    marked in the device's stream (:class:`~mtbench.core.runtime.Laps`: CUDA events, no synchronisation per
    step) and read later."""
    stream = iter(stream)
    while True:
        start = laps.mark()
        try:
            item = next(stream)
        except StopIteration:
            return
        stop = laps.mark()
        yield item, lambda start=start, stop=stop: laps.seconds(start, stop)


def _cumulative_ms(laps: list[Lap]) -> list[float]:
    """Milliseconds from the start of adaptation to each step: the running sum of the steps' laps."""
    out, total = [], 0.0
    for lap in laps:
        total += lap()
        out.append(total * 1000.0)
    return out


def _scored(stream: Iterable[Any], last_only: bool) -> Iterator[Any]:
    """The predictors of an ``adapt`` stream to score: all, or with ``last_only`` the last one (produced with
    the time of the whole stream, since its producer ran through the earlier steps)."""
    if not last_only:
        yield from stream
        return
    final, count = None, 0
    for count, final in enumerate(stream, 1):
        pass
    if final is not None:  # labelled with its step, which the evaluator could no longer count
        yield final if hasattr(final, "step") else at_step(count - 1, final)


def evaluate(method: Method, episodes: EpisodeSet, progress: bool = True, batched: bool = True,
             max_values: int | None = None, last_only: bool = False,
             saver: EvaluationState | None = None) -> dict[str, Any]:
    """Run ``method.adapt`` on every episode and score each intermediate predictor on the queries.

    Only the time spent inside ``adapt`` (producing the next predictor) counts as adaptation
    time; scoring the intermediate predictors is measurement overhead and is not counted.

    Args:
        batched: use the method's ``adapt_batch`` (:func:`evaluate_adapt_batched`) or ``predict_batch``
            (:func:`evaluate_batched`) when it has one; ``False``: episode by episode through ``adapt``
            whatever the method (the reference the batched paths are tested against).
        max_values: the chunk bound of the batched path (see :func:`episode_chunks`); by default one forward
            pass's worth of images, or ``method.chunk_episodes`` episodes where that is more.
        last_only: score the last predictor only (the earlier ones are produced, as adaptation needs them,
            but never called): what a loop that reports the final accuracy alone does, which ``mtbench bench``
            compares with such a loop. ``by_step`` then has the last step only.
        saver: a run's saved evaluation (``--checkpoint-every``, :mod:`mtbench.run.evaluation_state`): the
            episodes it holds are not evaluated again, and the progress is saved after an episode or chunk
            when it is due.

    Returns:
        A dict with the ``accuracy``, ``adaptation`` and ``evaluation`` sections of a result;
        ``evaluation.batched_episodes`` is ``None`` here, the chunk size on the batched path.
    """
    if batched and method.adapt_batch is not None:
        return evaluate_adapt_batched(method, episodes, progress, max_values, last_only, saver)
    if batched and method.predict_batch is not None:
        return evaluate_batched(method, episodes, progress, max_values, saver)
    device, ways = episodes.split.device, episodes.spec.ways
    before = _Before(saver, device)
    per_step_acc: list[torch.Tensor] = []  # one float[1, steps] per episode, kept on the device
    per_step_laps: list[list[Lap]] = []
    step_numbers: list[int] = list(before.step_numbers)
    finite: list[torch.Tensor] = []
    where: list[str] = []
    laps = Laps(device)
    reset_peak_memory(device)
    start = timer(device)

    def ms_sums() -> list[float]:  # each step's cumulative ms, summed over the episodes
        return [sum(column) for column in zip(*(_cumulative_ms(m) for m in per_step_laps))]

    def so_far() -> Progress:
        _check_finite(method.name, finite, where)  # what is saved has been checked
        return before.progress(per_step_acc, ms_sums(), step_numbers, timer(device) - start)

    with torch.no_grad(), _deferred(saver):
        for ep in tqdm((episodes[i] for i in range(before.episodes, len(episodes))), desc=f"evaluating {method.name}",
                       unit="episode", disable=not progress, mininterval=1.0, dynamic_ncols=True,
                       initial=before.episodes, total=len(episodes)):
            accs, ms = [], []
            for predictor, took in _timed(_scored(method.adapt(ep.support_x, ep.support_y, ways), last_only), laps):
                if not per_step_laps and not before.step_numbers:
                    step_numbers.append(int(getattr(predictor, "step", len(ms))))
                ms.append(_seconds(predictor, took))
                at = f"on episode {ep.index}, adaptation step {len(accs)}"
                logits = check_logits(method.name, predictor(ep.query_x), (len(ep.query_y), ways), at)
                finite.append(torch.isfinite(logits).all())
                where.append(at)
                accs.append(accuracy(logits, ep.query_y))
            if not accs:
                raise RuntimeError(f"{method.name}.adapt yielded no predictor")
            if len(ms) != len(step_numbers):
                raise RuntimeError(f"{method.name}.adapt yielded {len(ms)} predictors on episode {ep.index}, "
                                   f"{len(step_numbers)} before: the number of steps must not vary")
            per_step_acc.append(torch.stack(accs).unsqueeze(0))
            per_step_laps.append(ms)
            if saver:
                saver.boundary(so_far)
    seconds = timer(device) - start
    _check_finite(method.name, finite, where)
    return before.scores(per_step_acc, step_numbers, ms_sums(), seconds, len(episodes), None)


def evaluate_batched(method: Method, episodes: EpisodeSet, progress: bool = True,
                     max_values: int | None = None, saver: EvaluationState | None = None) -> dict[str, Any]:
    """:func:`evaluate` through ``method.predict_batch``, one call per chunk of episodes (:func:`episode_chunks`).

    Accuracies stay on the device until one transfer at the end. The adaptation time of an episode
    is its chunk's ``predict_batch`` time (support and queries) over the chunk's episodes: amortised,
    which ``evaluation.batched_episodes`` (the largest chunk) says.
    """
    device, ways = episodes.split.device, episodes.spec.ways
    before = _Before(saver, device)
    chunks = episode_chunks(episodes, max_values, getattr(method, "chunk_episodes", None))
    accs: list[torch.Tensor] = []  # float[chunk, 1] each, on the device
    finite: list[torch.Tensor] = []  # bool[chunk] each
    laps, chunk_laps = Laps(device), []
    reset_peak_memory(device)
    start = timer(device)
    name = f"{method.name}.predict_batch"

    def so_far() -> Progress:
        _check_finite(name, finite, [f"on episode {i}" for i in range(before.episodes, len(episodes))])
        return before.progress(accs, [_cumulative_ms(chunk_laps)[-1]], [0], timer(device) - start)

    with torch.no_grad(), _deferred(saver), tqdm(total=len(episodes), desc=f"evaluating {method.name}",
                                                 unit="episode", disable=not progress, mininterval=1.0,
                                                 dynamic_ncols=True, initial=before.episodes) as bar:
        for lo, hi in before.remaining(chunks):
            support_x, support_y, query_x, query_y = episodes.batch(lo, hi)
            t0 = laps.mark()
            logits = method.predict_batch(support_x, support_y, query_x, ways)  # type: ignore[misc]
            t1 = laps.mark()
            chunk_laps.append(_seconds(logits, lambda t0=t0, t1=t1: laps.seconds(t0, t1)))
            logits = check_logits(f"{method.name}.predict_batch", logits, tuple(query_y.shape) + (ways,),
                                  f"on episodes {lo} to {hi - 1}")
            finite.append(torch.isfinite(logits).flatten(1).all(1))
            accs.append(accuracy(logits, query_y).unsqueeze(1))
            bar.update(hi - lo)
            if saver:
                saver.boundary(so_far)
    seconds = timer(device) - start
    _check_finite(name, finite, [f"on episode {i}" for i in range(before.episodes, len(episodes))])
    size = max(hi - lo for lo, hi in chunks)
    ms = [_cumulative_ms(chunk_laps)[-1]] if chunk_laps else []
    return before.scores(accs, [0], ms, seconds, len(episodes), size)


def evaluate_adapt_batched(method: Method, episodes: EpisodeSet, progress: bool = True,
                           max_values: int | None = None, last_only: bool = False,
                           saver: EvaluationState | None = None) -> dict[str, Any]:
    """:func:`evaluate` through ``method.adapt_batch``: a chunk of episodes (:func:`episode_chunks`) adapts at
    once, and each of its predictors is scored on the chunk's queries, as every step is on the per-episode path.

    The adaptation time of a step is the time the chunk took to produce its predictor (cumulative, as on
    the per-episode path) over the chunk's episodes; scoring the predictors is not counted.
    """
    device, ways = episodes.split.device, episodes.spec.ways
    before = _Before(saver, device)
    chunks = episode_chunks(episodes, max_values, getattr(method, "chunk_episodes", None))
    accs: list[torch.Tensor] = []  # float[chunk, steps] each, on the device
    finite: list[torch.Tensor] = []  # bool[chunk] per chunk and step
    where: list[str] = []
    step_numbers: list[int] = list(before.step_numbers)
    chunk_laps: list[list[Lap]] = []  # per chunk, the lap of each step
    laps = Laps(device)
    reset_peak_memory(device)
    start = timer(device)
    name = f"{method.name}.adapt_batch"

    def ms_sums() -> list[float]:  # each step's cumulative ms, summed over the chunks
        return [sum(column) for column in zip(*(_cumulative_ms(c) for c in chunk_laps))]

    def so_far() -> Progress:
        _check_finite(name, finite, where)
        return before.progress(accs, ms_sums(), step_numbers, timer(device) - start)

    with torch.no_grad(), _deferred(saver), tqdm(total=len(episodes), desc=f"evaluating {method.name}",
                                                 unit="episode", disable=not progress, mininterval=1.0,
                                                 dynamic_ncols=True, initial=before.episodes) as bar:
        for lo, hi in before.remaining(chunks):
            support_x, support_y, query_x, query_y = episodes.batch(lo, hi)
            steps, ms = [], []
            stream = _scored(method.adapt_batch(support_x, support_y, ways), last_only)  # type: ignore[misc]
            for predictor, took in _timed(stream, laps):
                ms.append(took)
                if lo == 0:  # (a resumed evaluation has its step numbers from the saved part)
                    step_numbers.append(int(getattr(predictor, "step", len(steps))))
                logits = check_logits(name, predictor(query_x), tuple(query_y.shape) + (ways,),
                                      f"on episodes {lo} to {hi - 1}, adaptation step {len(steps)}")
                finite.append(torch.isfinite(logits).flatten(1).all(1))
                where += [f"on episode {i}, adaptation step {len(steps)}" for i in range(lo, hi)]
                steps.append(accuracy(logits, query_y))
            if len(steps) != len(step_numbers):
                raise RuntimeError(f"{name} yielded {len(steps)} predictors on episodes {lo} to {hi - 1}, "
                                   f"{len(step_numbers)} before: the number of steps must not vary")
            accs.append(torch.stack(steps, dim=1))
            chunk_laps.append(ms)
            bar.update(hi - lo)
            if saver:
                saver.boundary(so_far)
    seconds = timer(device) - start
    _check_finite(name, finite, where)
    size = max(hi - lo for lo, hi in chunks)
    return before.scores(accs, step_numbers, ms_sums(), seconds, len(episodes), size)


def _deferred(saver: EvaluationState | None) -> Any:
    """The saver's deferral of Ctrl-C and SIGTERM to the end of the episode or chunk in progress, if any."""
    return saver.deferred_signals() if saver else contextlib.nullcontext()


class _Before:
    """The part of the evaluation a saved state holds (:class:`~mtbench.run.evaluation_state.Progress`; nothing
    without one), which the evaluator adds to what it evaluates now."""

    def __init__(self, saver: EvaluationState | None, device: torch.device) -> None:
        saved = saver.resumed if saver else None
        self.device = device
        self.episodes = saved.episodes if saved else 0
        self.accs = [saved.accs.to(device)] if saved else []
        self.ms_sums = saved.ms_sums if saved else []
        self.step_numbers = saved.step_numbers if saved else []
        self.seconds = saved.seconds if saved else 0.0

    def remaining(self, chunks: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The chunks after the saved episodes, which end at a chunk's end (the chunks are a function of the
        episodes, the method and the device, which the saved state's identity fixes)."""
        if self.episodes and self.episodes not in {hi for _, hi in chunks}:
            raise UserError(f"--resume: the saved evaluation stops at episode {self.episodes}, inside a chunk of "
                            "this evaluation (the code that splits the episodes changed); delete the .evaluation.pt "
                            "file in the run's .resume folder to evaluate from the first episode")
        return [(lo, hi) for lo, hi in chunks if lo >= self.episodes]

    def _add(self, ms_sums: list[float]) -> list[float]:
        if not self.ms_sums or not ms_sums:
            return list(self.ms_sums or ms_sums)
        return [a + b for a, b in zip(self.ms_sums, ms_sums)]

    def progress(self, accs: list[torch.Tensor], ms_sums: list[float], step_numbers: list[int],
                 seconds: float) -> Progress:
        from mtbench.run.evaluation_state import Progress

        table = torch.cat(self.accs + accs)
        return Progress(len(table), table.cpu(), self._add(ms_sums), list(step_numbers), self.seconds + seconds)

    def scores(self, accs: list[torch.Tensor], step_numbers: list[int], ms_sums: list[float], seconds: float,
               total: int, batched: int | None) -> dict[str, Any]:
        """:func:`_scores` of the saved and the new episodes together."""
        ms = [m / total for m in self._add(ms_sums)]
        return _scores(torch.cat(self.accs + accs), step_numbers, ms, self.seconds + seconds, self.device, batched)


def _scores(acc: torch.Tensor, step_numbers: list[int], ms_by_step: list[float], seconds: float,
            device: torch.device, batched_episodes: int | None) -> dict[str, Any]:
    """The result sections from ``acc: float[episodes, steps]`` (on the device) and the timings."""
    table = acc.double().cpu()  # the one host transfer
    by_step = []
    for s in range(table.shape[1]):
        mean, ci = mean_ci95(table[:, s].tolist())
        by_step.append({"step": step_numbers[s], "mean": mean, "ci95": ci})
    mem, kind = peak_memory(device)
    return {
        "accuracy": {"mean": by_step[-1]["mean"], "ci95": by_step[-1]["ci95"], "per_episode": table[:, -1].tolist(),
                     "by_step": by_step},
        "adaptation": {"steps": table.shape[1], "ms_per_episode": ms_by_step[-1], "ms_by_step": ms_by_step},
        "evaluation": {"seconds": seconds, "tasks_per_s": table.shape[0] / seconds if seconds > 0 else 0.0,
                       "peak_memory_bytes": mem, "peak_memory_kind": kind, "batched_episodes": batched_episodes},
    }
