"""A clock for unit tests (:class:`controller.clock.Clock`)."""

from __future__ import annotations

import datetime as dt

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class FakeClock:
    """Moves only when told to: monotonic seconds and UTC wall-clock time move together,
    from ``start`` and ``wall``."""

    def __init__(self, start: float = 1000.0, wall: dt.datetime = T0) -> None:
        self.seconds = start
        self._start = start
        self._wall = wall

    def monotonic(self) -> float:
        """Seconds on the fake monotonic clock."""
        return self.seconds

    def now(self) -> dt.datetime:
        """``wall`` plus the seconds advanced since the start."""
        return self._wall + dt.timedelta(seconds=self.seconds - self._start)

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self.seconds += seconds
