"""Small statistics every chapter needs: intervals for test-set rates, means and spreads over seeds."""

from __future__ import annotations

import math


def wilson_interval(errors: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for ``z = 1.96``) of an error rate of ``errors`` out of ``n``.

    Returns ``(low, high)`` as fractions. On MNIST's 10,000 test images an
    error of 0.5% has the interval (0.38%, 0.66%): differences of a tenth of a
    percent between two models are inside the noise.
    """
    if n <= 0 or not 0 <= errors <= n:
        raise ValueError(f"need 0 <= errors <= n and n > 0, got errors={errors}, n={n}")
    p = errors / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals ``(low, high)`` overlap: then the two rates are not ranked."""
    return a[0] <= b[1] and b[0] <= a[1]


def mean_spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of at least two values."""
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"a spread needs at least two values, got {len(values)}")
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def separated(low: tuple[float, float], high: tuple[float, float]) -> bool:
    """Whether the mean ± spread ``low`` lies wholly below the mean ± spread ``high``: ``(mean, spread)``
    pairs, e.g. from :func:`mean_spread`. Only then does a page rank the two."""
    return low[0] + low[1] < high[0] - high[1]


def recent_improvement(values, window: int) -> float:
    """How much a training curve still falls at its end: the relative drop of the mean of the last
    ``window`` values below the mean of the ``window`` before them (negative: it rose). A run whose
    curve has flattened shows a drop of a few percent at most."""
    values = [float(v) for v in values]
    if window < 1 or len(values) < 2 * window:
        raise ValueError(f"need at least {2 * window} values for a window of {window}, got {len(values)}")
    before = sum(values[-2 * window:-window]) / window
    last = sum(values[-window:]) / window
    return (before - last) / abs(before)


def format_mean_spread(mean: float, spread: float, digits: int = 4) -> str:
    """``"mean ± spread"`` with ``digits`` decimals, for tables of results over seeds."""
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"
