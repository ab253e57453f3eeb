"""Rates of a sampled counter, second by second, for the throughput plot: only what the samples measured.

A rate is an increase between two samples divided by the time between them.
Two things must not become a rate: the counter's value before the first sample
(unknown, not zero), and an interval over which it went down (a reset, or a
reading that is not a counter for a moment): what happened across it is
unknown, so the interval is left out, with its time. A second in which no
interval ends gets no point.
"""
from __future__ import annotations

import math
from itertools import pairwise


def counter_rates(samples: list[tuple[float, float]], t0: float) -> list[list[float]]:
    """[[second since t0, rate per second], ...] of a counter sampled as (time, value), in time order.

    The first sample only gives the starting value. Each interval between two
    samples counts in the second its end falls in; a second's rate is the
    increase of its intervals over their total duration.
    """
    increase: dict[int, float] = {}
    spent: dict[int, float] = {}
    for (t_prev, v_prev), (t, v) in pairwise(samples):
        if v < v_prev or t <= t_prev:
            continue
        second = math.floor(t - t0)
        increase[second] = increase.get(second, 0.0) + (v - v_prev)
        spent[second] = spent.get(second, 0.0) + (t - t_prev)
    return [[second, round(increase[second] / spent[second], 1)] for second in sorted(increase)]
