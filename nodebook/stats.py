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
