"""The keyed work queue between the watches and the workers.

Informer handlers put ``namespace/name`` keys here; workers take one key at a time,
reconcile it from the cache, then call :meth:`WorkQueue.done` and either
:meth:`WorkQueue.forget` (success), :meth:`WorkQueue.add_after` (``requeue_after``) or
:meth:`WorkQueue.add_rate_limited` (a retryable error). The semantics are client-go's
rate-limited workqueue (``k8s.io/client-go/util/workqueue``):

* a key is queued at most once: adding a key that is already waiting is a no-op;
* a key is handed to at most one worker at a time: adding a key that a worker is
  processing marks it *dirty*, and it is queued again when that worker calls ``done``;
* delayed keys (``add_after``) become ready when the clock reaches their time; adding
  a delayed key again keeps the earlier time;
* ``add_rate_limited`` delays a key by ``base * factor ** failures`` (5 ms, 10 ms, 20 ms,
  ... capped at 10 s); ``forget`` resets the count once a reconcile succeeds.

The clock that decides when delayed keys are due is injected
(:class:`~controller.clock.Clock`), so unit tests drive it with a fake.
``get(timeout)`` blocks the calling thread on a condition variable; its timeout is real
time, because that is what a blocked thread experiences. With a fake clock, advance the
clock and call ``get(timeout=0)``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque

from controller.clock import SYSTEM_CLOCK, Clock

#: Exponent beyond which every backoff equals the cap (avoids float overflow).
_MAX_EXPONENT = 64


class WorkQueue:
    """A thread-safe, deduplicating, delaying, rate-limited queue of string keys."""

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        base_delay: float = 0.005,
        factor: float = 2.0,
        max_delay: float = 10.0,
    ) -> None:
        """``base_delay * factor ** n`` (capped at ``max_delay``) is the delay of the
        ``n``-th consecutive ``add_rate_limited`` of a key since it was last forgotten."""
        if base_delay <= 0 or factor < 1 or max_delay < base_delay:
            raise ValueError("need base_delay > 0, factor >= 1 and max_delay >= base_delay")
        self._clock = clock
        self._base_delay = base_delay
        self._factor = factor
        self._max_delay = max_delay
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        # Delayed keys: the earliest ready time per key, and a heap of (ready, seq, key)
        # entries; heap entries whose time no longer matches ``_waiting`` are stale.
        self._waiting: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._failures: dict[str, int] = {}
        self._shutting_down = False

    # -- adding ---------------------------------------------------------------------

    def add(self, key: str) -> None:
        """Queue ``key`` now, unless it is already queued; if a worker is processing it,
        queue it again when that worker calls :meth:`done`."""
        with self._cond:
            self._add_locked(key)

    def add_after(self, key: str, seconds: float) -> None:
        """Queue ``key`` once ``seconds`` have passed on the clock (now if ``<= 0``).

        A key already waiting keeps whichever ready time is earlier.
        """
        with self._cond:
            if self._shutting_down:
                return
            if seconds <= 0:
                self._add_locked(key)
                return
            ready = self._clock.monotonic() + seconds
            current = self._waiting.get(key)
            if current is not None and current <= ready:
                return
            self._waiting[key] = ready
            heapq.heappush(self._heap, (ready, next(self._seq), key))
            # A getter may be waiting for a later key; let it recompute its wait.
            self._cond.notify_all()

    def add_rate_limited(self, key: str) -> float:
        """Queue ``key`` after its exponential backoff; returns the delay used."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = self.backoff(failures)
        self.add_after(key, delay)
        return delay

    def backoff(self, failures: int) -> float:
        """The delay after ``failures`` earlier consecutive failures."""
        if failures >= _MAX_EXPONENT:
            return self._max_delay
        return float(min(self._base_delay * self._factor**failures, self._max_delay))

    def forget(self, key: str) -> None:
        """Reset the backoff of ``key`` (its reconcile succeeded)."""
        with self._cond:
            self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        """How many rate-limited adds ``key`` had since it was last forgotten."""
        with self._cond:
            return self._failures.get(key, 0)

    # -- taking ---------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> str | None:
        """The next ready key, marked as processing; ``None`` on timeout or shutdown.

        Blocks up to ``timeout`` seconds of real time (forever if ``None``). The caller
        must call :meth:`done` with the key when it has finished with it.
        """
        # A blocked thread waits in real time, whatever the injected clock says.
        deadline = None if timeout is None else SYSTEM_CLOCK.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutting_down:
                    return None
                self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                wait: float | None = None
                if deadline is not None:
                    wait = deadline - SYSTEM_CLOCK.monotonic()
                    if wait <= 0:
                        return None
                next_due = self._next_due_in_locked()
                if next_due is not None:
                    wait = next_due if wait is None else min(wait, next_due)
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        """Mark ``key`` as finished; if it was added meanwhile, queue it again."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty and not self._shutting_down:
                self._queue.append(key)
                self._cond.notify()

    # -- lifecycle and introspection ------------------------------------------------

    def shutdown(self) -> None:
        """Stop handing out keys: every blocked and future ``get`` returns ``None``."""
        with self._cond:
            self._shutting_down = True
            self._cond.notify_all()

    @property
    def shutting_down(self) -> bool:
        """True once :meth:`shutdown` was called."""
        with self._cond:
            return self._shutting_down

    def __len__(self) -> int:
        """The depth: keys ready to be handed out (delayed keys count once due)."""
        with self._cond:
            self._promote_due_locked()
            return len(self._queue)

    def waiting(self) -> int:
        """Keys scheduled for later (``add_after``, ``add_rate_limited``) and not yet due."""
        with self._cond:
            self._promote_due_locked()
            return len(self._waiting)

    def processing(self) -> frozenset[str]:
        """The keys handed out and not yet done."""
        with self._cond:
            return frozenset(self._processing)

    # -- internals (hold the lock) --------------------------------------------------

    def _add_locked(self, key: str) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self._cond.notify()

    def _promote_due_locked(self) -> None:
        if not self._heap:
            return
        now = self._clock.monotonic()
        while self._heap and self._heap[0][0] <= now:
            ready, _, key = heapq.heappop(self._heap)
            if self._waiting.get(key) != ready:
                continue  # superseded by an earlier time for the same key
            del self._waiting[key]
            self._add_locked(key)

    def _next_due_in_locked(self) -> float | None:
        while self._heap and self._waiting.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        return max(self._heap[0][0] - self._clock.monotonic(), 0.0)
