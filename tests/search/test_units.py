"""hpsearch.search.units: every form of count and duration a spec or a CLI flag may use, the errors
for what is not one, and formatters that the parsers read back."""

from __future__ import annotations

from typing import Any

import pytest

from hpsearch.search.units import (
    format_clock,
    format_compact,
    format_count,
    format_duration,
    parse_count,
    parse_duration,
)


@pytest.mark.parametrize(("raw", "count"), [
    (1234, 1234), (1.0, 1), (2.6, 3), ("1234", 1234), ("1M", 1_000_000), ("1m", 1_000_000),
    ("1.2M", 1_200_000), ("50K", 50_000), ("50k", 50_000), ("2G", 2_000_000_000),
    ("1.5m", 1_500_000), ("1e6", 1_000_000), ("1.5e3", 1500), ("1_000", 1000),
    ("1,000", 1000), ("1,000,000", 1_000_000), ("  7 ", 7), ("50 K", 50_000), ("1", 1),
])
def test_counts(raw: Any, count: int) -> None:
    assert parse_count(raw) == count


@pytest.mark.parametrize("raw", [
    0, 0.4, -5, True, None, float("inf"), float("nan"), "", "0", "-1", "1 million", "1T",
    "M", "1.2.3", "1e", "1e-3", "0.0001K", "lots", [1], {"n": 1},
])
def test_not_counts(raw: Any) -> None:
    with pytest.raises(ValueError, match=r"^expected a positive count like 1200000, '1\.2M', "
                                         r"'50K' or '2G' \(got .*\)$"):
        parse_count(raw)


def test_a_long_bad_count_is_cut() -> None:
    with pytest.raises(ValueError) as info:
        parse_count("9" * 10_000 + "x")
    assert len(str(info.value)) < 300 and str(info.value).endswith("…)")


@pytest.mark.parametrize(("raw", "seconds"), [
    (90, 90.0), (2.5, 2.5), ("45", 45.0), ("2.5", 2.5), ("90s", 90.0), ("30m", 1800.0),
    ("2h", 7200.0), ("1d", 86400.0), ("1h30m", 5400.0), ("1H 30M", 5400.0),
    ("1d2h3m4s", 93784.0), ("1.5h", 5400.0), ("90m30s", 5430.0),
])
def test_durations(raw: Any, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", [
    0, -1, True, None, "", "0", "0s", "soon", "half an hour", "5x", "h", "1h30", "30m1",
    "1w", "-5m", [90],
])
def test_not_durations(raw: Any) -> None:
    with pytest.raises(ValueError, match=r"^expected a positive number of seconds or a duration "
                                         r"like '90s', '30m', '2h' \(got .*\)$"):
        parse_duration(raw)


@pytest.mark.parametrize(("n", "text"), [
    (0, "0"), (999, "999"), (1000, "1K"), (1500, "1.5K"), (1_200_000, "1.2M"),
    (50_000_000, "50M"), (2_000_000_000, "2G"), (1_234_567, "1.235M"),
])
def test_format_count(n: int, text: str) -> None:
    assert format_count(n) == text


def test_format_count_in_a_fixed_unit() -> None:
    # The report's parameter and MAC columns: millions / billions, six decimals.
    assert format_count(390634, "M", 6) == "0.390634M"
    assert format_count(7_924_000, "G", 6) == "0.007924G"
    assert format_count(12, "", 0) == "12"


@pytest.mark.parametrize(("n", "text"), [
    (13_286, "13.3K"), (207_098, "207K"), (1_218_000, "1.22M"), (512, "512"), (0, "0"),
    (999_950, "1M"), (97_536, "97.5K"), (2_500_000_000, "2.5G"),
])
def test_format_compact_reads_at_a_glance(n: int, text: str) -> None:
    # The report's params and MACs: three significant digits, K/M/G; parsed back (rounded).
    assert format_compact(n) == text
    if n:
        assert parse_count(text) == pytest.approx(n, rel=5e-3)


@pytest.mark.parametrize("n", [1, 7, 999, 1000, 1500, 64_000, 1_200_000, 3_000_000_000])
def test_counts_round_trip(n: int) -> None:
    assert parse_count(format_count(n)) == n


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.4, "0s"), (45, "45s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"),
    (93784, "1d2h3m4s"), (-5, "0s"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [1, 59, 60, 61, 3599, 3600, 5400, 86400, 90061])
def test_durations_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0:00"), (5.9, "0:05"), (61, "1:01"), (3599, "59:59"), (3600, "1:00:00"),
    (3723, "1:02:03"), (-3, "0:00"),
])
def test_format_clock(seconds: float, text: str) -> None:
    assert format_clock(seconds) == text


def test_count_forms_the_report_accepts_are_accepted() -> None:
    # search.report.parse_count is to become units.parse_count: anything it reads must read.
    from hpsearch.search.report import parse_count as report_parse_count

    for raw in ("1M", "1.2M", "50K", "2G", "1e6", "1_000", "1,000", "50 K", 1200000, 2.5):
        assert parse_count(raw) == report_parse_count(raw), raw
