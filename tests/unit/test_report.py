"""``stepwise report``'s arithmetic and rendering on hand-built release lists: which
releases a period holds, the DORA figures, percentiles, when the status covers a period,
the figures read from Prometheus's answers, and the three output formats."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.rollout import Release
from controller.core.measurement import Series
from controller.report import (
    Period,
    build,
    covers,
    fmt_duration,
    in_period,
    median,
    nearest_rank,
    parse_period,
    prometheus_figures,
    prometheus_queries,
    render_json,
    render_markdown,
    render_table,
    status_figures,
)
from tests.support.releases import release_record

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def release(
    days_ago: float,
    outcome: str | None,
    *,
    revision: str = "abc123",
    attempt: int = 1,
    reason: str | None = None,
    detect: float | None = None,
    restore: float | None = None,
    lead: float | None = None,
) -> Release:
    """A release that started ``days_ago`` (changed 5 s before) and ended (if it did) an
    hour later."""
    optional = {
        "reason": reason,
        "timeToDetectSeconds": detect,
        "timeToRestoreSeconds": restore,
        "leadTimeSeconds": lead,
    }
    return release_record(
        NOW - days_ago * DAY,
        outcome,
        revision=revision,
        changed_before=dt.timedelta(seconds=5),
        ended_after=dt.timedelta(hours=1),
        attempt=attempt,
        **{key: value for key, value in optional.items() if value is not None},
    )


def promoted(days_ago: float, lead: float = 600.0, **kw: Any) -> Release:
    return release(days_ago, "Promoted", lead=lead, **kw)


def aborted(days_ago: float, detect: float, restore: float | None, **kw: Any) -> Release:
    return release(
        days_ago, "Aborted", reason="AnalysisFailed", detect=detect, restore=restore, **kw
    )


P30 = Period.ending("30d", NOW)


# -- periods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("2w", 14 * 86400),
        ("12h", 43200),
        ("1d12h", 129600),
        ("90m", 5400),
        ("45s", 45),
    ],
    ids=["days", "weeks", "hours", "combined", "minutes", "seconds"],
)
def test_parse_period(text: str, seconds: int) -> None:
    """Whole w, d, h, m, s units, alone or combined, as PromQL writes them."""
    assert parse_period(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "0d", "1.5d", "30 d", "-1d", "1y", "d"])
def test_parse_period_refuses(text: str) -> None:
    """No unit, zero, fractions, spaces, signs and years are refused, naming the forms."""
    with pytest.raises(ValueError, match=r"30d, 2w, 12h"):
        parse_period(text)


def test_parse_period_refuses_more_than_ten_years() -> None:
    """A period that no record reaches, and dates could not hold, is refused."""
    assert parse_period("3660d") == 3660 * 86400
    with pytest.raises(ValueError, match="longer than 3660d"):
        parse_period("523w")


def test_in_period_by_outcome_time_and_in_progress_listed() -> None:
    """A release belongs to the period its outcome fell in; one in progress is listed."""
    assert in_period(promoted(29), P30)
    assert not in_period(promoted(31), P30)  # ended 30 d 23 h ago
    assert in_period(release(40, None), P30)  # started long ago, still in progress
    edge = release(30, "Promoted")  # started exactly at the start, ended an hour later
    assert in_period(edge, P30)


# -- figures from the status -------------------------------------------------------------


def test_figures_of_a_month() -> None:
    """3 promoted, 1 aborted, 1 superseded in 30 days: 0.1 deploys a day, a failure rate
    of 1/4 (superseded counts for neither); an older one and one in progress count not."""
    releases = [
        promoted(45),  # before the period
        promoted(20, lead=300),
        aborted(15, detect=40, restore=4),
        release(12, "Superseded"),
        promoted(10, lead=900),
        promoted(5, lead=600),
        release(1, None),  # in progress
    ]
    f = status_figures(releases, P30)
    assert (f.promoted, f.aborted, f.superseded) == (3, 1, 1)
    assert f.deploys_per_day == pytest.approx(0.1)
    assert f.change_failure_rate == pytest.approx(0.25)
    assert f.percentile("lead", 50) == 600
    assert f.percentile("detect", 50) == 40
    assert f.percentile("detect", 90) == 40
    assert f.percentile("restore", 50) == 4


def test_no_decided_release_has_no_failure_rate() -> None:
    """Only superseded and in-progress releases: 0 deploys a day, no failure rate, no times."""
    f = status_figures([release(3, "Superseded"), release(1, None)], P30)
    assert f.deploys_per_day == 0
    assert f.change_failure_rate is None
    assert f.percentile("detect", 50) is None
    assert f.percentile("lead", 50) is None


def test_abort_not_yet_restored_counts_with_its_detect_time_only() -> None:
    """An abort whose traffic is not back on stable yet has no time to restore: it counts
    as a failure and in time to detect, not in time to restore."""
    f = status_figures([aborted(2, detect=30, restore=None), aborted(1, detect=50, restore=6)], P30)
    assert f.aborted == 2
    assert list(f.detect) == [30, 50]
    assert list(f.restore) == [6]
    assert f.percentile("detect", 50) == 40  # mean of the two middle values


def test_manual_abort_and_retry_attempts_count_separately() -> None:
    """An abort by hand, then its retry promoted: one failure, one deploy."""
    releases = [
        release(3, "Aborted", reason="Manual", detect=120, restore=3),
        promoted(2, attempt=2),
    ]
    f = status_figures(releases, P30)
    assert (f.promoted, f.aborted, f.change_failure_rate) == (1, 1, 0.5)


# -- percentiles -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "p50", "p90"),
    [
        ([], None, None),
        ([7.0], 7.0, 7.0),
        ([1.0, 3.0], 2.0, 3.0),
        ([5.0, 1.0, 3.0], 3.0, 5.0),
        ([float(v) for v in range(1, 11)], 5.5, 9.0),
        ([float(v) for v in range(1, 21)], 10.5, 18.0),
    ],
    ids=["none", "one", "two", "three-unsorted", "ten", "twenty"],
)
def test_median_and_nearest_rank_p90(
    values: list[float], p50: float | None, p90: float | None
) -> None:
    """The median averages the middle pair; p90 is the ceil(0.9 n)-th smallest value."""
    assert median(values) == p50
    assert nearest_rank(values, 90) == p90


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=50))
def test_nearest_rank_is_a_value_with_90_percent_at_or_below(values: list[float]) -> None:
    """p90 is one of the values, at least 90% of them are at or below it, and fewer than
    90% are strictly below it."""
    p90 = nearest_rank(values, 90)
    assert p90 in values
    assert sum(v <= p90 for v in values) >= 0.9 * len(values)
    assert sum(v < p90 for v in values) < 0.9 * len(values)


# -- does the status cover the period ------------------------------------------------------


@pytest.mark.parametrize(
    ("starts", "limit", "covered"),
    [
        ([], 10, True),
        ([20, 10, 5], 10, True),
        ([40, 20, 10], 3, True),
        ([25, 20, 10], 3, False),
        ([], 0, False),
    ],
    ids=["nothing-yet", "not-full", "full-oldest-before-period", "full-within-period", "limit-0"],
)
def test_covers(starts: list[int], limit: int, covered: bool) -> None:
    """A status not yet full dropped nothing; a full one covers the period only when its
    oldest release started before the period did."""
    assert covers([promoted(d) for d in starts], limit, P30) is covered


def test_build_partial_without_prometheus_says_so() -> None:
    """A full status whose oldest release is in the period: the status's figures, marked
    partial, with the date it holds releases since and what to pass."""
    report = build("shop", "checkout", [promoted(d) for d in (25, 20, 10)], 3, P30)
    assert not report.complete
    assert report.figures.source == "status"
    assert "partial: the status holds releases only since 2026-11-11 12:00 UTC" in report.note
    assert "--prometheus" in report.note


# -- Prometheus --------------------------------------------------------------------------


def test_queries_one_per_figure_scoped_and_escaped() -> None:
    """Counts by outcome and five quantiles over the period in seconds, for one namespace
    (label values escaped) or everything."""
    queries = prometheus_queries(P30, 'we"ird', "checkout")
    assert queries["counts"] == (
        "sum by (namespace, rollout, outcome, reason) "
        '(increase(stepwise_releases_total{namespace="we\\"ird",rollout="checkout"}[2592000s]))'
    )
    assert queries["detect_p90"] == (
        "histogram_quantile(0.9, sum by (namespace, rollout, le) "
        "(increase(stepwise_release_time_to_detect_seconds_bucket"
        '{namespace="we\\"ird",rollout="checkout"}[2592000s])))'
    )
    assert set(queries) == {
        "counts",
        "detect_p50",
        "detect_p90",
        "restore_p50",
        "restore_p90",
        "lead_p50",
    }
    assert "{}[2592000s]" in prometheus_queries(P30)["lead_p50"]


def s(value: float, **labels: str) -> Series:
    return Series(tuple(sorted(labels.items())), value, repr(value))


ANSWERS = {
    "counts": [
        s(8.07, namespace="shop", rollout="checkout", outcome="Promoted", reason=""),
        s(1.02, namespace="shop", rollout="checkout", outcome="Aborted", reason="Manual"),
        s(0.98, namespace="shop", rollout="checkout", outcome="Aborted", reason="AnalysisFailed"),
        s(2.0, namespace="shop", rollout="checkout", outcome="Superseded", reason=""),
        s(50.0, namespace="shop", rollout="cart", outcome="Promoted", reason=""),
    ],
    "detect_p50": [s(42.5, namespace="shop", rollout="checkout")],
    "detect_p90": [s(float("nan"), namespace="shop", rollout="checkout")],
    "restore_p50": [],
    "restore_p90": [],
    "lead_p50": [s(900.0, namespace="shop", rollout="checkout")],
}


def test_prometheus_figures_round_extrapolated_counts_and_drop_nan() -> None:
    """increase()'s extrapolated counts are rounded and summed over reasons; another
    Rollout's series are not counted; a NaN quantile or none at all is no figure."""
    f = prometheus_figures(ANSWERS, "shop", "checkout", P30)
    assert (f.source, f.promoted, f.aborted, f.superseded) == ("prometheus", 8, 2, 2)
    assert f.change_failure_rate == pytest.approx(0.2)
    assert f.percentile("detect", 50) == 42.5
    assert f.percentile("detect", 90) is None
    assert f.percentile("restore", 50) is None
    assert f.percentile("lead", 50) == 900.0


def test_build_takes_prometheus_when_the_status_does_not_cover() -> None:
    """A full status: figures from Prometheus, the status's releases still listed."""
    releases = [promoted(d) for d in (25, 20, 10)]
    report = build("shop", "checkout", releases, 3, P30, ANSWERS, "http://prom:9090")
    assert report.figures.source == "prometheus"
    assert report.figures.promoted == 8
    assert len(report.releases) == 3
    assert "figures from Prometheus at http://prom:9090" in report.note


def test_build_keeps_the_status_when_it_covers_even_with_prometheus() -> None:
    """The status is exact where it covers the period, so Prometheus is not used."""
    report = build("shop", "checkout", [promoted(5)], 10, P30, ANSWERS, "http://prom:9090")
    assert report.complete
    assert report.figures.source == "status"
    assert report.figures.promoted == 1


def test_build_without_series_falls_back_to_partial_status() -> None:
    """Prometheus has no series for this Rollout: the status's figures, partial, and why."""
    report = build("other", "x", [promoted(d) for d in (25, 20)], 2, P30, ANSWERS, "http://p")
    assert report.figures.source == "status"
    assert "Prometheus at http://p has no stepwise_releases_total series" in report.note


# -- rendering ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.25, "250ms"),
        (4.23, "4.2s"),
        (42.4, "42s"),
        (185, "3m05s"),
        (7800, "2h10m"),
        (273600, "3d4h"),
    ],
)
def test_fmt_duration(seconds: float | None, text: str) -> None:
    """Durations in the unit a person reads at a glance."""
    assert fmt_duration(seconds) == text


def month() -> list[Release]:
    return [
        promoted(20, lead=300, revision="6d8f7c9b"),
        aborted(15, detect=40, restore=4.2, revision="7a1b2c3d"),
        promoted(10, lead=900, revision="7a1b2c3d", attempt=2),
    ]


def test_table() -> None:
    """The table: the period, each figure with its value, source and detail, then one
    line per release with its outcome, revision (#attempt), images, author and times."""
    text = render_table([build("shop", "checkout", month(), 10, P30)], P30)
    lines = text.splitlines()
    assert lines[0] == (
        "Rollout shop/checkout: last 30d (2026-11-06 12:00:00 to 2026-12-06 12:00:00 UTC)"
    )
    assert lines[1].split() == ["FIGURE", "VALUE", "FROM", "DETAIL"]
    assert lines[2].split()[:4] == ["deploys", "per", "day", "0.07"]
    assert "status" in lines[2]
    assert "2 promoted in 30 days" in lines[2]
    assert "33%" in lines[3]
    assert "1 aborted of 3; 0 superseded, not counted" in lines[3]
    assert "median 40s, p90 40s" in lines[4]
    assert "of 1 abort" in lines[4]
    assert "median 4.2s, p90 4.2s" in lines[5]
    assert "median 10m00s" in lines[6]
    header = lines[8].split()
    assert header[:3] == ["OUTCOME", "REASON", "REVISION"]
    rows = [ln.split() for ln in lines[9:]]
    assert rows[0][:3] == ["Promoted", "-", "6d8f7c9b"]
    assert rows[1][:5] == [
        "Aborted",
        "AnalysisFailed",
        "7a1b2c3d",
        "registry.local/app:v2",
        "kubectl-set",
    ]
    assert rows[1][-3:] == ["40s", "4.2s", "-"]
    assert rows[2][2] == "7a1b2c3d#2"
    assert rows[2][-1] == "15m00s"


def test_table_no_release_yet_and_none_in_period() -> None:
    """A Rollout with no release says so, and one whose releases are older says that."""
    text = render_table(
        [build("shop", "new", [], 10, P30), build("shop", "old", [promoted(60)], 10, P30)], P30
    )
    new, old = text.split("\n\n", 1)
    assert new.splitlines()[1:] == [
        "  No releases yet: the status records one when the pod template changes."
    ]
    assert "FIGURE" in old  # figures of zero releases in the period: 0 a day
    assert "0 promoted in 30 days" in old
    assert old.rstrip().endswith("No releases in the last 30d.")


def test_markdown() -> None:
    """Markdown: a heading per Rollout, a figures table and a releases table."""
    text = render_markdown([build("shop", "checkout", month(), 10, P30)], P30)
    lines = text.splitlines()
    assert lines[0].startswith("### shop/checkout: last 30d")
    assert lines[2] == "| figure | value | from | detail |"
    assert lines[4] == "| deploys per day | 0.07 | status | 2 promoted in 30 days |"
    assert "| outcome | reason | revision |" in text
    assert "| Aborted | AnalysisFailed | 7a1b2c3d | registry.local/app:v2 |" in text


def test_json() -> None:
    """JSON: the period, the figures with their source in seconds, the releases in the
    status's own camelCase form."""
    doc = json.loads(render_json([build("shop", "checkout", month(), 10, P30)], P30))
    assert doc["period"] == {
        "since": "30d",
        "start": "2026-11-06T12:00:00+00:00",
        "end": "2026-12-06T12:00:00+00:00",
        "days": 30.0,
    }
    (ro,) = doc["rollouts"]
    assert (ro["namespace"], ro["name"], ro["complete"]) == ("shop", "checkout", True)
    figures = ro["figures"]
    assert figures["deploysPerDay"] == {"value": pytest.approx(2 / 30), "source": "status"}
    assert figures["changeFailureRate"]["value"] == pytest.approx(1 / 3)
    assert figures["timeToRestore"] == {"medianSeconds": 4.2, "p90Seconds": 4.2, "source": "status"}
    assert figures["leadTime"]["medianSeconds"] == 600
    assert ro["releases"][1]["outcome"] == "Aborted"
    assert ro["releases"][1]["timeToDetectSeconds"] == 40
