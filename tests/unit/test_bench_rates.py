"""The throughput plot of `make bench` draws only what was measured: rates of a sampled counter."""
import math

from bench.rates import counter_rates
from bench.report import _with_gaps


def test_a_steady_counter_gives_its_rate_each_second():
    samples = [(100.0 + i * 0.25, 50 * i) for i in range(9)]  # 200 per second for 2 s
    assert counter_rates(samples, t0=100.0) == [[0, 200.0], [1, 200.0], [2, 200.0]]


def test_the_first_sample_is_the_starting_value_not_an_increase_from_zero():
    assert counter_rates([(10.0, 5000), (10.5, 5100), (11.0, 5200)], t0=10.0) == [[0, 200.0], [1, 200.0]]
    assert counter_rates([(10.0, -300), (10.5, -200)], t0=10.0) == [[0, 200.0]]


def test_an_interval_over_which_the_counter_went_down_is_left_out_with_its_time():
    samples = [(0.0, 0), (0.5, 100), (1.0, 40), (1.5, 140), (2.5, 340)]  # reset between 0.5 and 1.0
    rates = counter_rates(samples, t0=0.0)
    assert rates == [[0, 200.0], [1, 200.0], [2, 200.0]]
    assert all(rate >= 0 for _, rate in rates)


def test_a_second_without_a_sample_gets_no_point():
    samples = [(0.0, 0), (0.5, 50), (3.5, 350), (3.9, 390)]  # nothing sampled in seconds 1 and 2
    assert counter_rates(samples, t0=0.0) == [[0, 100.0], [3, 100.0]]
    assert counter_rates([(0.0, 7)], t0=0.0) == []
    assert counter_rates([], t0=0.0) == []


def test_the_plot_breaks_its_line_where_seconds_are_missing():
    xs, ys = _with_gaps([[0, 100.0], [3, 100.0], [4, 90.0]])
    assert xs[:1] == [0] and math.isnan(xs[1]) and xs[2:] == [3, 4]
    assert ys[:1] == [100.0] and math.isnan(ys[1]) and ys[2:] == [100.0, 90.0]
    assert _with_gaps([[0, 1.0], [1, 2.0]]) == ([0, 1], [1.0, 2.0])
