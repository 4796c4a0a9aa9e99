"""nodebook.stats: the Wilson interval of a test-set error rate, intervals' overlap, mean and spread."""

import math

import pytest

from nodebook.stats import (format_mean_spread, intervals_overlap, mean_spread, recent_improvement, separated,
                            wilson_interval)


def test_wilson_interval_known_values():
    low, high = wilson_interval(50, 10000)  # 0.5% on MNIST's test set
    assert low == pytest.approx(0.0037949, abs=1e-6) and high == pytest.approx(0.0065853, abs=1e-6)
    assert wilson_interval(0, 100)[0] == 0.0 and 0 < wilson_interval(0, 100)[1] < 0.04
    assert wilson_interval(100, 100)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="errors <= n"):
        wilson_interval(11, 10)


def test_a_tenth_of_a_percent_on_mnist_is_inside_the_noise():
    assert intervals_overlap(wilson_interval(41, 10000), wilson_interval(50, 10000))
    assert not intervals_overlap(wilson_interval(40, 10000), wilson_interval(160, 10000))


def test_mean_spread_is_the_sample_standard_deviation():
    mean, spread = mean_spread([1.0, 2.0, 3.0])
    assert mean == 2.0 and spread == pytest.approx(1.0)
    assert mean_spread([0.5, 0.5])[1] == 0.0
    assert mean_spread([1, 4])[1] == pytest.approx(math.sqrt(4.5))
    with pytest.raises(ValueError, match="at least two"):
        mean_spread([1.0])


def test_separated_ranks_only_outside_the_spreads():
    assert separated((0.3, 0.02), (0.5, 0.05))
    assert not separated((0.3, 0.1), (0.5, 0.15))  # 0.4 > 0.35: the intervals overlap
    assert not separated((0.5, 0.01), (0.3, 0.01))  # the wrong way round


def test_recent_improvement():
    assert recent_improvement([4, 3, 2, 1], 2) == pytest.approx((3.5 - 1.5) / 3.5)
    assert recent_improvement([1, 1, 1, 1, 1, 1], 3) == 0.0
    assert recent_improvement([1, 1, 2, 2], 2) == pytest.approx(-1.0)  # it rose
    with pytest.raises(ValueError, match="at least 4 values"):
        recent_improvement([1, 2, 3], 2)


def test_format_mean_spread():
    assert format_mean_spread(0.12345, 0.01, 3) == "0.123 ± 0.010"
