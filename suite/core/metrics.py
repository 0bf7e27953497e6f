"""Summary statistics for per-episode measurements."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation 95 % confidence interval of the mean.

    ``1.96 * s / sqrt(n)`` with the sample standard deviation ``s`` (n - 1 in the denominator), as
    few-shot papers report over their test episodes. One value gives a half-width of 0.
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, Z95 * math.sqrt(var / n)
