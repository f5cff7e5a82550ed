"""The one clock of the controller.

Monotonic seconds time every delay and deadline (the work queue's delayed keys, the
heartbeats, the lease, the measuring pool's deadlines and breakers, the budgets of a
Prometheus query or a web request); UTC wall-clock time stamps what is written (status
times, measurements, Lease records). Everything that reads the time takes a
:class:`Clock`, :data:`SYSTEM_CLOCK` unless told otherwise, so unit tests drive it with a
fake. A thread blocked on a condition or an event waits in real time whatever the clock
says: that is what a blocked thread experiences, so the deadline of such a wait is read
from :data:`SYSTEM_CLOCK`.

It stands outside the layers (like :mod:`controller.errors`), so the runtime and the
adapters share it.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic and wall-clock time; :class:`SystemClock` in production."""

    def monotonic(self) -> float:
        """Seconds since an arbitrary fixed point; never goes backwards."""
        ...

    def now(self) -> dt.datetime:
        """The current UTC time (timezone-aware)."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()

    def now(self) -> dt.datetime:
        """The current UTC time."""
        return dt.datetime.now(dt.UTC)


SYSTEM_CLOCK: Clock = SystemClock()
