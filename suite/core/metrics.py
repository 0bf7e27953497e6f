"""Summary statistics for per-episode measurements, over one fit or several fits (training seeds).

One fit scored on E episodes gets the normal-approximation 95 % interval of its episode mean
(:func:`mean_ci95`). S fits of one configuration that differ only by their training seed, scored on the
same E episodes, form a crossed S × E table ``a[s, i] = mu + seed_s + episode_i + resid``; the grand mean
then varies with the seeds as well as with the episodes (:func:`seed_mean_ci95`):

    Var(grand mean) = sigma2_seed / S + sigma2_episode / E + sigma2_resid / (S E)

estimated without bias from the two-way ANOVA mean squares by ``(MS_seed + MS_episode - MS_resid) / (S E)``;
its seed and episode parts each get their own Student t quantile. The same split gives the paired
difference of two such tables on the same episodes (:func:`paired_seed_difference`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

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


# -- Student's t ------------------------------------------------------------------------------------
def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz), for
    ``x < (a + 1) / (a + b + 2)`` where it converges fast."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _beta_regularized(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom (any real df; ``inf``: the normal)."""
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    tail = 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def _t_pdf(t: float, df: float) -> float:
    return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
                    - (df + 1) / 2 * math.log1p(t * t / df))


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` > 0 degrees of freedom (``inf``: the normal's).

    Newton's method on :func:`t_cdf` from 0: above the median the CDF is concave, so every step stays below
    the root and the iteration climbs to it without overshooting.
    """
    if not 0.0 < q < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < q < 1 and df > 0, got q={q}, df={df}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    if math.isinf(df):
        pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    else:
        pdf = lambda x: _t_pdf(x, df)  # noqa: E731
    x = 0.0
    for _ in range(200):
        step = (q - t_cdf(x, df)) / pdf(x)
        x += step
        if abs(step) <= 1e-13 * max(1.0, x):
            break
    return x


# -- seeds x episodes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedTable:
    """The two-way ANOVA of an S × E table (a row per training seed, a column per test episode)."""

    seeds: int
    episodes: int
    mean: float
    episode_means: tuple[float, ...]  # each episode's mean over the seeds
    ms_seed: float  # E * variance of the seed means (S - 1 df); 0 with one seed
    ms_episode: float  # S * variance of the episode means (E - 1 df); 0 with one episode
    ms_resid: float  # the interaction / residual ((S - 1)(E - 1) df); 0 when either is 1


def seed_table(rows: Sequence[Sequence[float]]) -> SeedTable:
    """:class:`SeedTable` of ``rows``: one sequence per seed, all of the same length E >= 1 (the same episodes)."""
    s = len(rows)
    if s == 0 or len({len(r) for r in rows}) != 1 or not rows[0]:
        raise ValueError("a seeds x episodes table needs one or more rows of the same, non-zero length")
    e = len(rows[0])
    mean = math.fsum(math.fsum(r) for r in rows) / (s * e)
    seed_means = [math.fsum(r) / e for r in rows]
    ep_means = tuple(math.fsum(r[i] for r in rows) / s for i in range(e))
    ss_seed = e * math.fsum((m - mean) ** 2 for m in seed_means)
    ss_ep = s * math.fsum((m - mean) ** 2 for m in ep_means)
    ss_resid = math.fsum((r[i] - sm - ep_means[i] + mean) ** 2 for r, sm in zip(rows, seed_means) for i in range(e))
    return SeedTable(s, e, mean, ep_means,
                     ms_seed=ss_seed / (s - 1) if s > 1 else 0.0,
                     ms_episode=ss_ep / (e - 1) if e > 1 else 0.0,
                     ms_resid=ss_resid / ((s - 1) * (e - 1)) if s > 1 and e > 1 else 0.0)



@dataclass(frozen=True)
class Interval:
    """A mean (or a difference of means), the half-width of its 95 % interval and the estimated variance of
    the mean; ``parts`` are the independent components of that variance with their degrees of freedom (none:
    the normal approximation)."""

    mean: float
    ci95: float
    variance: float
    parts: tuple[tuple[float, float], ...] = ()

    @property
    def df(self) -> float:
        """The degrees of freedom of the Student t whose 97.5 % quantile gives :attr:`ci95` (``inf``: normal)."""
        dfs = [df for v, df in self.parts if v > 0]
        if self.variance <= 0 or not dfs:
            return math.inf
        q, lo, hi = self.ci95 / math.sqrt(self.variance), min(dfs), max(dfs)
        for _ in range(60):  # bisection on log df: the quantile falls as df grows
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if t_quantile(0.975, mid) > q else (lo, mid)
        return math.sqrt(lo * hi)

    def p_value(self) -> float:
        """Two-sided p-value of a zero mean from Student's t with :attr:`df` (below 0.05 exactly when the
        interval excludes 0); 1.0 for an exact zero with no spread, 0.0 for a non-zero one. The lower tail at
        -|t| is computed directly: 1 - P(T <= |t|) rounds to 0 beyond p ~ 1e-16, which printed as "p=0"."""
        if self.variance <= 0:
            return 1.0 if self.mean == 0 else 0.0
        return 2.0 * t_cdf(-abs(self.mean) / math.sqrt(self.variance), self.df)


def p_text(p: float) -> str:
    """A p-value as the boards print it, with ``*`` below 0.05: two significant digits, and ``p<1e-300`` where
    it is below what a float holds (a normal z beyond about 38.5), not ``p=0``."""
    return (f"p={p:.2g}" if p > 0 else "p<1e-300") + (", *" if p < 0.05 else "")


def _combine(mean: float, parts: list[tuple[float, float]]) -> Interval:
    """The interval of a mean whose variance is the sum of independent components ``(estimate, df)``: each
    component's 95 % t half-width, added in quadrature, ``sqrt(sum t_{0.975, df_j}^2 V_j)``."""
    if not parts:
        return Interval(mean, 0.0, 0.0)
    var = math.fsum(v for v, _ in parts)
    half = math.sqrt(math.fsum(t_quantile(0.975, df) ** 2 * v for v, df in parts))
    return Interval(mean, half, var, tuple(parts))


def satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    """Satterthwaite's degrees of freedom of a sum of independent variance estimates ``(V_j, df_j)``:
    ``(sum V_j)^2 / sum V_j^2 / df_j`` (``inf`` when all are 0)."""
    spread = math.fsum(v * v / df for v, df in parts if v)
    return math.fsum(v for v, _ in parts) ** 2 / spread if spread > 0 else math.inf


def _seeded(mean: float, tables: Sequence[SeedTable], diff: Sequence[float]) -> Interval:
    """The interval of ``mean`` = the signed sum of ``tables``' grand means = the mean of ``diff``, the matching
    signed sum of their episode means (one per shared episode).

    Each table's grand mean is the mean of its seed means; they vary with the seed and with the residual
    averaged over the episodes, ``MS_seed / (S E)`` estimating that part of the variance with S - 1 df (the t
    interval of the seed means); two tables' seed parts are pooled with Satterthwaite's df (Welch's rule).
    What the seed means share is the episodes: that part, sigma2_episode / E for one table (for two tables
    on the same episodes, the variance of their paired episode difference over E), is ``var(diff) / E`` less
    each table's residual the seed part already holds, ``MS_resid / (S E)``, with E - 1 df (0 when
    negative). The half-width adds the two parts' t half-widths in quadrature. A one-seed table has no seed
    part to estimate (its residual stays in ``var(diff)``); with no table of two or more seeds this is
    :func:`mean_ci95` of ``diff``, the normal approximation.
    """
    seeded = [t for t in tables if t.seeds > 1]
    d_mean, d_ci = mean_ci95(diff)
    if not seeded:
        return Interval(d_mean, d_ci, (d_ci / Z95) ** 2)
    seeds = [(t.ms_seed / (t.seeds * t.episodes), t.seeds - 1) for t in seeded]
    parts = [(math.fsum(v for v, _ in seeds), satterthwaite(seeds))]
    if len(diff) > 1:
        episode = (d_ci / Z95) ** 2 - math.fsum(t.ms_resid / (t.seeds * t.episodes) for t in seeded)
        parts.append((max(0.0, episode), len(diff) - 1))
    return _combine(mean, [(v, df) for v, df in parts if v > 0])


def seed_mean_ci95(rows: Sequence[Sequence[float]]) -> Interval:
    """The grand mean of an S × E table of accuracies (a row per training seed, the same E episodes in every
    row) and its 95 % interval, counting the variance between seeds as well as between episodes.

    The variance of the grand mean, sigma2_seed / S + sigma2_episode / E + sigma2_resid / (S E), is estimated
    without bias by ``(MS_seed + MS_episode - MS_resid) / (S E)`` (E[MS_seed] = sigma2_resid + E sigma2_seed,
    E[MS_episode] = sigma2_resid + S sigma2_episode, E[MS_resid] = sigma2_resid), split in two independent
    parts: ``MS_seed / (S E)`` (the seed means' spread, S - 1 df) and ``(MS_episode - MS_resid) / (S E)`` (the
    episodes the seeds share, E - 1 df; 0 when negative). The half-width adds each part's t half-width in
    quadrature, ``sqrt(t_{S-1}^2 V_seed + t_{E-1}^2 V_episode)``: with few seeds one t quantile with
    Satterthwaite's degrees of freedom covers too rarely (its df grows exactly when the seed part comes out
    small by chance), this stays near 95 % (tests/test_seed_rows.py). With S = 1 it is :func:`mean_ci95`.
    """
    t = seed_table(rows)
    return _seeded(t.mean, [t], t.episode_means)


def paired_seed_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Interval:
    """The difference of the grand means of two seeds × episodes tables on the same E episodes (``a`` minus
    ``b``; each with any number of seeds) and its 95 % interval: each table's seed part as in
    :func:`seed_mean_ci95` (``MS_seed / (S E)``, S - 1 df; the two pooled with Satterthwaite's df), and the
    paired episode part, the variance of the per-episode difference of the seed-averaged accuracies over E
    less the residual the seed parts already count (E - 1 df), t half-widths added in quadrature. A one-seed
    table's seed variance cannot be estimated and is left out, so a difference to a single-seed row is too
    narrow when seeds matter. Between one-seed tables this is the usual paired
    normal interval over episodes (:func:`mean_ci95` of the differences)."""
    ta, tb = seed_table(a), seed_table(b)
    if ta.episodes != tb.episodes:
        raise ValueError(f"paired tables need the same episodes, got {ta.episodes} and {tb.episodes}")
    diff = [x - y for x, y in zip(ta.episode_means, tb.episode_means)]
    return _seeded(ta.mean - tb.mean, [ta, tb], diff)
