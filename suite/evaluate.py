"""The standardized evaluator: accuracy after every adaptation step, time to adapt, throughput."""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from .episodes import EpisodeSet
from .functional import accuracy
from .methods import Method
from .metrics import mean_ci95
from .runtime import peak_memory, reset_peak_memory, timer


def evaluate(method: Method, episodes: EpisodeSet, progress: bool = True) -> dict[str, Any]:
    """Run ``method.adapt`` on every episode and score each intermediate predictor on the queries.

    Only the time spent inside ``adapt`` (producing the next predictor) counts as adaptation
    time; scoring the intermediate predictors is measurement overhead and is not counted.

    Returns:
        A dict with the ``accuracy``, ``adaptation`` and ``evaluation`` sections of a result.
    """
    device, ways = episodes.split.device, episodes.spec.ways
    per_step_acc: list[torch.Tensor] = []  # one float[steps] per episode, kept on the device
    per_step_ms: list[list[float]] = []
    step_numbers: list[int] = []
    reset_peak_memory(device)
    start = timer(device)
    with torch.no_grad():
        for ep in tqdm(episodes, desc=f"evaluating {method.name}", unit="episode", disable=not progress,
                       mininterval=1.0, dynamic_ncols=True):
            stream = iter(method.adapt(ep.support_x, ep.support_y, ways))
            accs, ms, elapsed = [], [], 0.0
            while True:
                t0 = timer(device)
                try:
                    predictor = next(stream)
                except StopIteration:
                    break
                elapsed += timer(device) - t0
                if not per_step_ms:
                    step_numbers.append(int(getattr(predictor, "step", len(ms))))
                ms.append(elapsed * 1000.0)
                accs.append(accuracy(predictor(ep.query_x), ep.query_y))
            if not accs:
                raise RuntimeError(f"{method.name}.adapt yielded no predictor")
            if per_step_ms and len(ms) != len(per_step_ms[0]):
                raise RuntimeError(f"{method.name}.adapt yielded {len(ms)} predictors on episode {ep.index}, "
                                   f"{len(per_step_ms[0])} before: the number of steps must not vary")
            per_step_acc.append(torch.stack(accs))
            per_step_ms.append(ms)
    seconds = timer(device) - start
    table = torch.stack(per_step_acc).double().cpu()  # [episodes, steps]
    steps = table.shape[1]
    by_step = []
    for s in range(steps):
        mean, ci = mean_ci95(table[:, s].tolist())
        by_step.append({"step": step_numbers[s], "mean": mean, "ci95": ci})
    final = table[:, -1].tolist()
    mem, kind = peak_memory(device)
    ms_by_step = [sum(m[s] for m in per_step_ms) / len(per_step_ms) for s in range(steps)]
    return {
        "accuracy": {"mean": by_step[-1]["mean"], "ci95": by_step[-1]["ci95"], "per_episode": final,
                     "by_step": by_step},
        "adaptation": {"steps": steps, "ms_per_episode": ms_by_step[-1], "ms_by_step": ms_by_step},
        "evaluation": {"seconds": seconds, "tasks_per_s": len(episodes) / seconds if seconds > 0 else 0.0,
                       "peak_memory_bytes": mem, "peak_memory_kind": kind},
    }
