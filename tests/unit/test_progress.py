"""Tests of the terminal progress bar: the pure renderer and the throttled writer."""
from __future__ import annotations

import io

import pytest

from services.progress import PollingProgress, ProgressBar, format_bytes, format_duration, render_progress


def test_progress_line_shows_percent_bytes_speed_and_eta():
    line = render_progress("compress", 5_000_000, 20_000_000, elapsed=1.0, width=100)
    assert line.startswith("compress  25% [")
    assert "5.0 MB/20.0 MB" in line
    assert "5.0 MB/s" in line
    assert line.endswith("ETA 0:03")


@pytest.mark.parametrize("width", [200, 80, 60, 40, 20, 1])
def test_progress_line_never_reaches_the_last_column(width):
    line = render_progress("decompress", 123_456_789, 987_654_321, elapsed=3.0, width=width)
    assert len(line) <= width - 1


def test_progress_bar_gives_way_before_the_numbers_on_a_narrow_terminal():
    line = render_progress("compress", 1_000_000, 4_000_000, elapsed=1.0, width=50)
    assert "[" not in line
    assert "ETA" in line


def test_progress_bar_fill_follows_the_fraction_done():
    line = render_progress("x", 50, 100, elapsed=1.0, width=200)
    bar = line[line.index("[") + 1: line.index("]")]
    assert bar.count("#") == bar.count("-")


def test_progress_without_a_total_shows_bytes_and_speed_only():
    line = render_progress("compress", 3_000_000, None, elapsed=2.0, width=80)
    assert line == "compress 3.0 MB  1.5 MB/s"


def test_progress_before_any_time_has_passed_has_unknown_speed_and_eta():
    line = render_progress("compress", 0, 100, elapsed=0.0, width=80)
    assert "-- MB/s" in line and "ETA --:--" in line


@pytest.mark.parametrize("size, text", [(0, "0 B"), (999, "999 B"), (1500, "1.5 kB"),
                                        (27_100_000, "27.1 MB"), (3.2e9, "3.2 GB")])
def test_sizes_are_printed_in_decimal_units(size, text):
    assert format_bytes(size) == text


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (59.6, "1:00"), (125, "2:05"),
                                           (3725, "1:02:05"), (float("nan"), "--:--"),
                                           (float("inf"), "--:--"), (-1, "--:--")])
def test_durations_are_printed_as_clock_time(seconds, text):
    assert format_duration(seconds) == text


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_redraws_at_most_once_per_interval_but_always_at_the_end():
    clock, out = _Clock(), io.StringIO()
    bar = ProgressBar("compress", 1000, out, enabled=True, clock=clock, min_interval=0.1)
    for t, done in [(0.0, 100), (0.05, 200), (0.08, 300), (0.2, 400), (0.21, 1000)]:
        clock.now = t
        bar(done)
    redraws = out.getvalue().split("\r")[1:]
    assert len(redraws) == 3  # 100, 400 and the final 1000; 200 and 300 were too soon
    assert "100%" in redraws[-1]


def test_disabled_progress_bar_writes_nothing():
    out = io.StringIO()
    bar = ProgressBar("compress", 1000, out, enabled=False)
    bar(500)
    bar(1000)
    bar.clear()
    assert out.getvalue() == ""


def test_clearing_the_progress_bar_blanks_the_line_it_drew():
    clock, out = _Clock(), io.StringIO()
    bar = ProgressBar("compress", 1000, out, enabled=True, clock=clock)
    clock.now = 1.0
    bar(500)
    drawn = out.getvalue()
    bar.clear()
    erased = out.getvalue()[len(drawn):]
    assert erased == "\r" + " " * (len(drawn) - 1) + "\r"


def test_polling_progress_never_goes_back_and_stops_short_of_the_total():
    readings = iter([5, 3, 12, 20])
    seen: list[int] = []
    poller = PollingProgress(seen.append, lambda: next(readings), total=10, interval=60)
    assert [poller.poll_once() for _ in range(4)] == [5, 5, 9, 9]


def test_polling_progress_shows_at_most_99_percent_before_the_caller_says_done():
    total = 80_000_000
    poller = PollingProgress(lambda done: None, lambda: total, total=total, interval=60)
    done = poller.poll_once()
    assert done < total and " 99% " in render_progress("compress", done, total, elapsed=1.0)
