"""The arithmetic and the rendering of ``stepwise report``: pure, no I/O.

Where it sits in the flow::

    cli/report.py: Rollouts from the API server ─▶ releases(status) ─▶ covers()?
        yes ─▶ status_figures()                      (exact, from status.releases)
        no, with --prometheus ─▶ prometheus_queries() ─▶ PrometheusClient (adapter)
                              ─▶ prometheus_figures() (from the controller's counters)
    ─▶ render_table() / render_markdown() / render_json()

The figures are DORA-style, per Rollout, over a period ending now:

* **deploys per day**: releases promoted in the period / the period's length in days;
* **change failure rate**: aborted / (promoted + aborted); a *superseded* release (a newer
  template replaced it before it was promoted or aborted) counts for neither, as it
  neither reached users in full nor failed;
* **time to detect** and **time to restore** of the aborted releases: median and p90;
* **lead time** of the promoted releases: median.

A release belongs to the period by its outcome's time (``endedAt``): that is when the
controller counts it in ``stepwise_releases_total``, so both sources count the same
releases. A release still in progress is listed, and counted nowhere.

Percentiles of the status's few values: the median is the middle value (the mean of the
two middle ones for an even count); p90 is the *nearest rank*: the smallest value with at
least 90% of the values at or below it (the ``ceil(0.9 n)``-th smallest), so it is always
one of the measured values, and with fewer than ten values it is the largest. From
Prometheus, both are ``histogram_quantile`` over the histograms' increase in the period:
linear interpolation inside a bucket, so as exact as the buckets are narrow.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from controller.api.rollout import Release
from controller.core.measurement import Series
from controller.core.promql import escape

DEFAULT_HISTORY_LIMIT: Final = 10
"""``spec.releaseHistoryLimit`` when a Rollout does not set it."""

MAX_PERIOD: Final = 3660 * 86400
"""The longest period a report covers: ten years and then some."""
_PERIOD_PART: Final = re.compile(r"(\d+)([wdhms])")
_PERIOD_UNITS: Final = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_period(text: str) -> int:
    """Seconds in a period like ``30d``, ``2w``, ``12h`` or ``1d12h`` (whole units w, d,
    h, m, s, as PromQL writes them). Raises ``ValueError`` saying what is accepted."""
    if not re.fullmatch(r"(\d+[wdhms])+", text) or not (
        seconds := sum(int(n) * _PERIOD_UNITS[u] for n, u in _PERIOD_PART.findall(text))
    ):
        raise ValueError(
            f"{text!r} is not a period: use a positive whole number of w, d, h, m or s "
            "(30d, 2w, 12h, 1d12h)"
        )
    if seconds > MAX_PERIOD:
        raise ValueError(f"{text!r} is longer than {MAX_PERIOD // 86400}d")
    return seconds


@dataclass(frozen=True)
class Period:
    """The period a report covers: ``seconds`` ending at ``end``."""

    text: str
    """As the user wrote it (``30d``)."""
    seconds: int
    end: dt.datetime

    @classmethod
    def ending(cls, text: str, end: dt.datetime) -> Period:
        """The period ``text`` (see :func:`parse_period`) that ends at ``end``."""
        return cls(text, parse_period(text), end)

    @property
    def start(self) -> dt.datetime:
        return self.end - dt.timedelta(seconds=self.seconds)

    @property
    def days(self) -> float:
        return self.seconds / 86400


Source = Literal["status", "prometheus"]


@dataclass(frozen=True)
class Figures:
    """The figures of one Rollout over a period, and where they came from."""

    source: Source
    promoted: int
    aborted: int
    superseded: int
    days: float
    detect: tuple[float, ...] = ()
    """Times to detect (status only; Prometheus gives the quantiles below instead)."""
    restore: tuple[float, ...] = ()
    lead: tuple[float, ...] = ()
    quantiles: Mapping[str, float | None] = field(default_factory=dict)
    """From Prometheus: ``detect_p50``, ``detect_p90``, ``restore_p50``, ``restore_p90``,
    ``lead_p50`` (None: no observation in the period)."""

    @property
    def deploys_per_day(self) -> float:
        return self.promoted / self.days

    @property
    def change_failure_rate(self) -> float | None:
        """None when nothing was promoted or aborted (no rate to give)."""
        decided = self.promoted + self.aborted
        return self.aborted / decided if decided else None

    def percentile(self, figure: str, q: Literal[50, 90]) -> float | None:
        """The median (q=50) or p90 of ``detect``, ``restore`` or ``lead``."""
        if self.source == "prometheus":
            return self.quantiles.get(f"{figure}_p{q}")
        values: tuple[float, ...] = getattr(self, figure)
        return median(values) if q == 50 else nearest_rank(values, 90)


def median(values: Sequence[float]) -> float | None:
    """The middle value (mean of the two middle ones for an even count); None for none."""
    return statistics.median(values) if values else None


def nearest_rank(values: Sequence[float], percent: float) -> float | None:
    """The nearest-rank percentile: the ``ceil(percent/100 * n)``-th smallest value (at
    least the first); always one of ``values``. None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


# -- which releases ----------------------------------------------------------------------


def in_period(release: Release, period: Period) -> bool:
    """Whether the release is listed: it ended in the period, or is still in progress."""
    if release.ended_at is None:
        return release.started_at <= period.end
    return period.start <= release.ended_at <= period.end


def covers(releases: Sequence[Release], limit: int, period: Period) -> bool:
    """Whether the status holds every release of the period.

    The status keeps the last ``limit`` releases, oldest first. While it holds fewer, none
    was dropped; once full, the dropped ones ended before the oldest kept one started
    (one release at a time), so they lie outside a period starting after that.
    """
    if len(releases) < limit:
        return True
    return bool(releases) and releases[0].started_at <= period.start


def status_figures(releases: Iterable[Release], period: Period) -> Figures:
    """The figures from the status's releases whose outcome falls in the period."""
    ended = [r for r in releases if r.outcome is not None and in_period(r, period)]
    promoted = [r for r in ended if r.outcome == "Promoted"]
    aborted = [r for r in ended if r.outcome == "Aborted"]
    return Figures(
        source="status",
        promoted=len(promoted),
        aborted=len(aborted),
        superseded=sum(r.outcome == "Superseded" for r in ended),
        days=period.days,
        detect=tuple(
            r.time_to_detect_seconds for r in aborted if r.time_to_detect_seconds is not None
        ),
        restore=tuple(
            r.time_to_restore_seconds for r in aborted if r.time_to_restore_seconds is not None
        ),
        lead=tuple(r.lead_time_seconds for r in promoted if r.lead_time_seconds is not None),
    )


# -- Prometheus ----------------------------------------------------------------------------

RELEASES_TOTAL: Final = "stepwise_releases_total"
HISTOGRAMS: Final = {
    "detect": "stepwise_release_time_to_detect_seconds",
    "restore": "stepwise_release_time_to_restore_seconds",
    "lead": "stepwise_release_lead_time_seconds",
}
_QUANTILES: Final = (
    ("detect", 50),
    ("detect", 90),
    ("restore", 50),
    ("restore", 90),
    ("lead", 50),
)


def prometheus_queries(
    period: Period, namespace: str | None = None, name: str | None = None
) -> dict[str, str]:
    """The instant queries for every Rollout in scope, keyed ``counts`` and
    ``<figure>_p<q>``: one query per figure whatever the number of Rollouts, each result
    by ``namespace`` and ``rollout``. The range is the period in whole seconds."""
    matchers = [
        f'{label}="{escape(value, chr(34))}"'
        for label, value in (("namespace", namespace), ("rollout", name))
        if value is not None
    ]
    selector = "{" + ",".join(matchers) + "}"
    window = f"[{period.seconds}s]"
    queries = {
        "counts": f"sum by (namespace, rollout, outcome, reason) "
        f"(increase({RELEASES_TOTAL}{selector}{window}))"
    }
    for figure, q in _QUANTILES:
        queries[f"{figure}_p{q}"] = (
            f"histogram_quantile({q / 100}, sum by (namespace, rollout, le) "
            f"(increase({HISTOGRAMS[figure]}_bucket{selector}{window})))"
        )
    return queries


def _of(series: Series, namespace: str, name: str) -> bool:
    labels = dict(series.labels)
    return labels.get("namespace") == namespace and labels.get("rollout") == name


def has_series(answers: Mapping[str, Sequence[Series]], namespace: str, name: str) -> bool:
    """Whether Prometheus holds ``stepwise_releases_total`` for this Rollout at all."""
    return any(_of(s, namespace, name) for s in answers.get("counts", ()))


def prometheus_figures(
    answers: Mapping[str, Sequence[Series]], namespace: str, name: str, period: Period
) -> Figures:
    """The figures of one Rollout from the answers to :func:`prometheus_queries`.

    ``increase()`` extrapolates to the ends of the range, so a count comes back as 2.03
    rather than 2: counts are rounded to whole releases. A quantile that is NaN (no
    observation in the period) is None.
    """
    counts = {"Promoted": 0.0, "Aborted": 0.0, "Superseded": 0.0}
    for s in answers.get("counts", ()):
        outcome = dict(s.labels).get("outcome", "")
        if _of(s, namespace, name) and outcome in counts and not math.isnan(s.value):
            counts[outcome] += s.value
    quantiles: dict[str, float | None] = {}
    for figure, q in _QUANTILES:
        key = f"{figure}_p{q}"
        found = [s.value for s in answers.get(key, ()) if _of(s, namespace, name)]
        value = found[0] if found else None
        quantiles[key] = None if value is None or not math.isfinite(value) else value
    return Figures(
        source="prometheus",
        promoted=round(counts["Promoted"]),
        aborted=round(counts["Aborted"]),
        superseded=round(counts["Superseded"]),
        days=period.days,
        quantiles=quantiles,
    )


# -- one Rollout's report --------------------------------------------------------------


@dataclass(frozen=True)
class RolloutReport:
    """What the report says about one Rollout."""

    namespace: str
    name: str
    figures: Figures
    releases: tuple[Release, ...]
    """The status's releases in the period, oldest first."""
    complete: bool
    """Whether ``releases`` are all the period's releases (the status covers it)."""
    kept_since: dt.datetime | None
    """When the oldest release the status still holds started."""
    note: str = ""
    """Why the figures are partial or where they came from, when that needs saying."""


def build(
    namespace: str,
    name: str,
    releases: Sequence[Release],
    limit: int,
    period: Period,
    prometheus: Mapping[str, Sequence[Series]] | None = None,
    prometheus_url: str = "",
) -> RolloutReport:
    """The report of one Rollout: from the status when it covers the period, else from
    ``prometheus`` (the answers to :func:`prometheus_queries`, None without
    ``--prometheus``); without either, the status's figures marked partial."""
    listed = tuple(r for r in releases if in_period(r, period))
    complete = covers(releases, limit, period)
    kept_since = releases[0].started_at if releases else None
    if complete:
        return RolloutReport(
            namespace, name, status_figures(releases, period), listed, True, kept_since
        )
    since = f"{kept_since:%Y-%m-%d %H:%M} UTC" if kept_since else "nothing"
    if prometheus is not None and has_series(prometheus, namespace, name):
        return RolloutReport(
            namespace,
            name,
            prometheus_figures(prometheus, namespace, name, period),
            listed,
            False,
            kept_since,
            f"figures from Prometheus at {prometheus_url}; the status holds releases since "
            f"{since} (releaseHistoryLimit {limit}), listed below",
        )
    why = (
        f"Prometheus at {prometheus_url} has no {RELEASES_TOTAL} series for it"
        if prometheus is not None
        else "pass --prometheus URL for the whole period"
    )
    return RolloutReport(
        namespace,
        name,
        status_figures(releases, period),
        listed,
        False,
        kept_since,
        f"partial: the status holds releases only since {since} "
        f"(releaseHistoryLimit {limit}); {why}",
    )


# -- rendering ---------------------------------------------------------------------------


def fmt_duration(seconds: float | None) -> str:
    """``-``, ``850ms``, ``4.2s``, ``42s``, ``3m05s``, ``2h10m``, ``3d4h``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def _fmt_time(when: dt.datetime | None) -> str:
    return f"{when.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}" if when else "-"


def _source(report: RolloutReport) -> str:
    if report.figures.source == "prometheus":
        return "prometheus"
    return "status" if report.complete else "status (partial)"


def figure_rows(report: RolloutReport) -> list[tuple[str, str, str]]:
    """(figure, value, detail) for each figure of a Rollout."""
    f = report.figures
    rate = f.change_failure_rate
    status = f.source == "status"
    n_detect = _of_n(len(f.detect), "abort") if status else _QUANTILE_DETAIL
    n_restore = _of_n(len(f.restore), "restored abort") if status else _QUANTILE_DETAIL
    n_lead = _of_n(len(f.lead), "promotion") if status else _QUANTILE_DETAIL
    return [
        ("deploys per day", f"{f.deploys_per_day:.2f}", f"{f.promoted} promoted in {_days(f)}"),
        (
            "change failure rate",
            "-" if rate is None else f"{rate:.0%}",
            f"{f.aborted} aborted of {f.promoted + f.aborted}; "
            f"{f.superseded} superseded, not counted",
        ),
        (
            "time to detect",
            f"median {fmt_duration(f.percentile('detect', 50))}, "
            f"p90 {fmt_duration(f.percentile('detect', 90))}",
            n_detect,
        ),
        (
            "time to restore",
            f"median {fmt_duration(f.percentile('restore', 50))}, "
            f"p90 {fmt_duration(f.percentile('restore', 90))}",
            n_restore,
        ),
        ("lead time", f"median {fmt_duration(f.percentile('lead', 50))}", n_lead),
    ]


_QUANTILE_DETAIL: Final = "histogram_quantile over the period"


def _of_n(n: int, what: str) -> str:
    return f"of {n} {what}{'' if n == 1 else 's'}"


def _days(f: Figures) -> str:
    return f"{f.days:g} day{'s' if f.days != 1 else ''}"


RELEASE_HEADER: Final = (
    "OUTCOME",
    "REASON",
    "REVISION",
    "IMAGES",
    "CHANGED BY",
    "STARTED (UTC)",
    "DETECT",
    "RESTORE",
    "LEAD",
)


def release_row(release: Release) -> tuple[str, ...]:
    """One release as table cells (``rev#2`` for a retry's second attempt)."""
    revision = release.revision + (f"#{release.attempt}" if release.attempt > 1 else "")
    return (
        release.outcome or "InProgress",
        release.reason or "-",
        revision,
        ",".join(release.images) or "-",
        release.changed_by or "-",
        _fmt_time(release.started_at),
        fmt_duration(release.time_to_detect_seconds),
        fmt_duration(release.time_to_restore_seconds),
        fmt_duration(release.lead_time_seconds),
    )


def _title(report: RolloutReport, period: Period) -> str:
    return (
        f"Rollout {report.namespace}/{report.name}: last {period.text} "
        f"({_fmt_time(period.start)} to {_fmt_time(period.end)} UTC)"
    )


def _columns(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        (indent + "   ".join(c.ljust(widths[i]) for i, c in enumerate(row))).rstrip()
        for row in rows
    ]


def render_table(reports: Sequence[RolloutReport], period: Period) -> str:
    """Plain text for a terminal: per Rollout, its figures, then its releases."""
    out: list[str] = []
    for report in reports:
        if out:
            out.append("")
        out.append(_title(report, period))
        if _nothing_yet(report):
            out.append(f"  {_no_releases(report, period)}")
            continue
        figures = [("FIGURE", "VALUE", "FROM", "DETAIL")]
        figures += [(n, v, _source(report), d) for n, v, d in figure_rows(report)]
        out += _columns(figures, "  ")
        if report.note:
            out.append(f"  note: {report.note}")
        out.append("")
        if report.releases:
            out += _columns([RELEASE_HEADER, *map(release_row, report.releases)], "  ")
        else:
            out.append(f"  {_no_releases(report, period)}")
    return "\n".join(out) + "\n"


def _nothing_yet(report: RolloutReport) -> bool:
    """No release was ever recorded: no figures to show, only that."""
    return report.complete and report.kept_since is None


def _no_releases(report: RolloutReport, period: Period) -> str:
    if report.kept_since is None:
        return "No releases yet: the status records one when the pod template changes."
    return f"No releases in the last {period.text}."


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def render_markdown(reports: Sequence[RolloutReport], period: Period) -> str:
    """GitHub-flavoured Markdown: a heading per Rollout, a table of figures, one of
    releases (for a pull request, a wiki page or a chat message)."""
    out: list[str] = []
    for report in reports:
        out += [f"### {_title(report, period).removeprefix('Rollout ')}", ""]
        if _nothing_yet(report):
            out += [_no_releases(report, period), ""]
            continue
        out += ["| figure | value | from | detail |", "| --- | --- | --- | --- |"]
        out += [
            f"| {_md(n)} | {_md(v)} | {_source(report)} | {_md(d)} |"
            for n, v, d in figure_rows(report)
        ]
        if report.note:
            out += ["", f"_{_md(report.note)}_"]
        out.append("")
        if report.releases:
            header = [h.lower() for h in RELEASE_HEADER]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + " --- |" * len(header))
            out += [
                "| " + " | ".join(_md(c) for c in release_row(r)) + " |" for r in report.releases
            ]
        else:
            out.append(_no_releases(report, period))
        out.append("")
    return "\n".join(out)


def _figure_json(report: RolloutReport) -> dict[str, Any]:
    f = report.figures
    source = _source(report)

    def pair(figure: str) -> dict[str, Any]:
        return {
            "medianSeconds": f.percentile(figure, 50),
            "p90Seconds": f.percentile(figure, 90),
            "source": source,
        }

    return {
        "promoted": f.promoted,
        "aborted": f.aborted,
        "superseded": f.superseded,
        "deploysPerDay": {"value": f.deploys_per_day, "source": source},
        "changeFailureRate": {"value": f.change_failure_rate, "source": source},
        "timeToDetect": pair("detect"),
        "timeToRestore": pair("restore"),
        "leadTime": {"medianSeconds": f.percentile("lead", 50), "source": source},
    }


def render_json(reports: Sequence[RolloutReport], period: Period) -> str:
    """One JSON document: the period, and per Rollout its figures (each with its source;
    times in seconds, null when there is none) and its releases as the status has them."""
    doc = {
        "period": {
            "since": period.text,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "days": period.days,
        },
        "rollouts": [
            {
                "namespace": r.namespace,
                "name": r.name,
                "complete": r.complete,
                "keptSince": r.kept_since.isoformat() if r.kept_since else None,
                "note": r.note,
                "figures": _figure_json(r),
                "releases": [x.wire() for x in r.releases],
            }
            for r in reports
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


RENDERERS: Final = {"table": render_table, "markdown": render_markdown, "json": render_json}
