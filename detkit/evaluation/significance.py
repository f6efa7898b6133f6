"""Is a difference between two detectors more than noise? Paired confidence intervals and a verdict.

Two ways to get an interval for the difference ``B - A`` of a metric:

* **over seeds** (:func:`paired_t_interval`): train A and B with the same seeds (same initialisation
  and data order per seed), take the per-seed differences ``d_s``; the interval is Student's
  ``mean(d) +- t(1 - (1 - c) / 2, n - 1) * sd(d) / sqrt(n)``. It covers training noise (and the
  validation set is the same for both, so its sampling is held fixed).
* **over images** (:func:`bootstrap_interval`, for one seed): the per-image differences of a
  per-image metric (e.g. COCO AP of each validation image, :func:`detkit.evaluation.per_image_ap`)
  resampled with replacement; the percentile interval of the resampled means. It covers which
  validation images were drawn, not training noise: one training run can still be a lucky one.

A difference is *significant* when its interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "bootstrap_interval", "paired_t_interval", "t_quantile", "verdict"]


@dataclass(frozen=True)
class Interval:
    """A difference's estimate and confidence interval.

    Attributes:
        mean: the estimate (mean difference).
        low: the interval's lower bound (NaN when it cannot be computed, e.g. one seed).
        high: its upper bound (NaN likewise).
        n: how many differences it rests on (seeds or images).
        method: ``"t over seeds"`` or ``"bootstrap over images"``.
        confidence: e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    n: int
    method: str
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 (False when it is undefined)."""
        return bool(self.low > 0 or self.high < 0)


def _t_two_sided_mass(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3 / 26.7.4:
    finite sums in ``theta = atan(t / sqrt(df))``)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:  # odd: 2/pi * (theta + sin * cos * (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, total = c, 0.0 if df == 1 else c
        for k in range(1, (df - 3) // 2 + 1):
            term *= c * c * (2 * k) / (2 * k + 1)
            total += term
        return 2.0 / math.pi * (theta + s * total)
    term, total = 1.0, 1.0  # even: sin * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, (df - 2) // 2 + 1):
        term *= c * c * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided critical value ``t`` with ``P(|T| <= t) = confidence`` for Student's t with
    ``df`` degrees of freedom (e.g. ``t_quantile(0.95, 2) = 4.303``), by bisection on the exact CDF.

    Raises:
        ValueError: unless ``0 < confidence < 1`` and ``df`` is an int >= 1.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be an int >= 1, got {df!r}")
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(hi, 1.0):
            break
    return (lo + hi) / 2


def paired_t_interval(differences: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student's t interval of the mean of paired differences (one per seed).

    With one difference the bounds are NaN (no spread to estimate); with all differences equal the
    interval is that value (zero width).
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        raise ValueError("paired_t_interval needs at least one difference")
    mean = float(d.mean())
    if d.size == 1:
        return Interval(mean, math.nan, math.nan, 1, "t over seeds", confidence)
    half = t_quantile(confidence, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return Interval(mean, mean - half, mean + half, int(d.size), "t over seeds", confidence)


def bootstrap_interval(differences: Sequence[float] | np.ndarray, confidence: float = 0.95, resamples: int = 10000,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of per-item differences (e.g. per image).

    ``resamples`` means of ``n`` items drawn with replacement (numpy generator seeded by ``seed``,
    so the interval is reproducible); the bounds are their ``(1 -+ confidence) / 2`` quantiles.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        raise ValueError("bootstrap_interval needs at least one difference")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # in blocks: bounded memory for large n
        stop = min(start + 1000, resamples)
        means[start:stop] = d[rng.integers(0, d.size, size=(stop - start, d.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(d.mean()), float(low), float(high), int(d.size), "bootstrap over images", confidence)


def verdict(name: str, reference: str, interval: Interval, metric: str = "AP") -> str:
    """One line such as ``ATSS - max-IoU: +0.16 AP, 95% CI [0.12, 0.20] (significant)``."""
    pct = f"{100 * interval.confidence:g}%"
    if math.isnan(interval.low):
        return f"{name} - {reference}: {interval.mean:+.3f} {metric}, no interval ({interval.method}, n=1)"
    word = "significant" if interval.significant else "not significant"
    return (f"{name} - {reference}: {interval.mean:+.3f} {metric}, {pct} CI [{interval.low:+.3f}, "
            f"{interval.high:+.3f}] ({word}; {interval.method}, n={interval.n})")
