"""The work queue: dedupe, dirty requeue, delays on an injected clock, backoff, shutdown."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.runtime.queue import WorkQueue
from tests.support.clock import FakeClock


def drain(q: WorkQueue) -> list[str]:
    """Every ready key, in order, each marked done."""
    out = []
    while (key := q.get(timeout=0)) is not None:
        out.append(key)
        q.done(key)
    return out


def delayed(*keys: tuple[str, float]) -> tuple[WorkQueue, FakeClock]:
    """A queue on a fake clock, each ``(key, seconds)`` added after its delay in turn."""
    clock = FakeClock()
    q = WorkQueue(clock=clock)
    for key, seconds in keys:
        q.add_after(key, seconds)
    return q, clock


def test_add_dedupes_a_key_that_is_already_queued() -> None:
    """Adding a queued key again does not queue it twice."""
    q = WorkQueue()
    q.add("ns/a")
    q.add("ns/b")
    q.add("ns/a")
    assert len(q) == 2
    assert drain(q) == ["ns/a", "ns/b"]


def test_key_added_while_processing_is_requeued_once_after_done() -> None:
    """A key added (even twice) during processing is not handed out until done, then once."""
    q = WorkQueue()
    q.add("ns/a")
    key = q.get(timeout=0)
    assert key == "ns/a"
    q.add("ns/a")
    q.add("ns/a")
    assert len(q) == 0
    assert q.get(timeout=0) is None, "a key being processed must not go to a second worker"
    q.done("ns/a")
    assert len(q) == 1
    assert drain(q) == ["ns/a"]


def test_done_without_a_new_add_does_not_requeue() -> None:
    """A processed key that nobody added again leaves the queue empty."""
    q = WorkQueue()
    q.add("ns/a")
    assert q.get(timeout=0) == "ns/a"
    q.done("ns/a")
    assert len(q) == 0
    assert q.get(timeout=0) is None


def test_get_times_out_with_none_when_empty() -> None:
    """A blocking get on an empty queue returns None after its timeout."""
    q = WorkQueue()
    start = time.monotonic()
    assert q.get(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04


def test_get_blocks_until_a_key_is_added_from_another_thread() -> None:
    """A blocked getter wakes as soon as another thread adds a key."""
    q = WorkQueue()
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    time.sleep(0.05)
    q.add("ns/a")
    t.join(timeout=2)
    assert got == ["ns/a"]


def test_add_after_releases_keys_in_ready_time_order_on_the_clock() -> None:
    """Delayed keys are held until the clock reaches them, then come out earliest first."""
    q, clock = delayed(("ns/late", 3.0), ("ns/early", 1.0), ("ns/mid", 2.0))
    assert q.get(timeout=0) is None
    assert q.waiting() == 3
    clock.advance(1.0)
    assert drain(q) == ["ns/early"]
    clock.advance(5.0)
    assert drain(q) == ["ns/mid", "ns/late"]
    assert q.waiting() == 0


def test_add_after_keeps_the_earlier_time_for_the_same_key() -> None:
    """Scheduling a waiting key again keeps the earlier time and yields the key once."""
    q, clock = delayed(("ns/a", 10.0), ("ns/a", 2.0), ("ns/a", 5.0))
    clock.advance(2.0)
    assert drain(q) == ["ns/a"]
    clock.advance(10.0)
    assert drain(q) == [], "superseded schedules must not fire again"


def test_add_after_with_no_delay_queues_at_once() -> None:
    """A zero or negative delay is a plain add."""
    q, _ = delayed(("ns/a", 0), ("ns/b", -1))
    assert drain(q) == ["ns/a", "ns/b"]


def test_delayed_key_already_queued_is_not_duplicated_when_due() -> None:
    """A key both queued and delayed is handed out once while it still waits in the queue."""
    clock = FakeClock()
    q = WorkQueue(clock=clock)
    q.add("ns/a")
    q.add_after("ns/a", 1.0)
    clock.advance(1.0)
    assert drain(q) == ["ns/a"]


def test_blocked_getter_wakes_when_a_delayed_key_becomes_due() -> None:
    """With the real clock, a blocked get returns a delayed key once its delay passes."""
    q = WorkQueue()
    q.add_after("ns/a", 0.1)
    start = time.monotonic()
    assert q.get(timeout=2) == "ns/a"
    assert 0.08 <= time.monotonic() - start < 1.5


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.005), (1, 0.010), (2, 0.020), (5, 0.160), (10, 5.12), (11, 10.0), (200, 10.0)],
    ids=["first", "second", "third", "sixth", "eleventh", "capped", "far-past-cap"],
)
def test_backoff_grows_exponentially_from_5ms_and_caps_at_10s(
    failures: int, expected: float
) -> None:
    """The n-th consecutive failure waits 5 ms * 2**n, never more than 10 s."""
    assert WorkQueue().backoff(failures) == pytest.approx(expected)


def test_add_rate_limited_delays_grow_per_key_and_forget_resets() -> None:
    """Each rate-limited add of a key doubles its delay; other keys and forget start over."""
    clock = FakeClock()
    q = WorkQueue(clock=clock)
    delays = [q.add_rate_limited("ns/a") for _ in range(4)]
    assert delays == pytest.approx([0.005, 0.010, 0.020, 0.040])
    assert q.num_requeues("ns/a") == 4
    assert q.add_rate_limited("ns/b") == pytest.approx(0.005)
    q.forget("ns/a")
    assert q.num_requeues("ns/a") == 0
    assert q.add_rate_limited("ns/a") == pytest.approx(0.005)


def test_rate_limited_key_is_ready_only_after_its_backoff() -> None:
    """A rate-limited key waits for its delay on the clock before a worker gets it."""
    clock = FakeClock()
    q = WorkQueue(clock=clock)
    for _ in range(3):
        q.add_rate_limited("ns/a")  # 5 ms, 10 ms, 20 ms: the earliest (5 ms) wins
    assert q.get(timeout=0) is None
    clock.advance(0.004)
    assert q.get(timeout=0) is None
    clock.advance(0.001)
    assert drain(q) == ["ns/a"]


def test_backoff_is_capped_for_a_key_that_keeps_failing() -> None:
    """After many failures the delay stays at the 10 s cap."""
    q = WorkQueue(clock=FakeClock())
    delays = [q.add_rate_limited("ns/a") for _ in range(30)]
    assert max(delays) == 10.0
    assert delays[-1] == 10.0
    assert delays == sorted(delays)


def test_shutdown_wakes_every_blocked_getter_with_none() -> None:
    """Shutdown returns None to all blocked getters at once, and to later gets."""
    q = WorkQueue()
    results: list[str | None] = []
    lock = threading.Lock()

    def worker() -> None:
        key = q.get()
        with lock:
            results.append(key)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    q.shutdown()
    for t in threads:
        t.join(timeout=2)
        assert not t.is_alive()
    assert results == [None] * 4
    q.add("ns/a")
    assert q.get(timeout=0) is None
    assert q.shutting_down


def test_invalid_backoff_settings_are_rejected() -> None:
    """A non-positive base delay or a cap below it is a programming error."""
    with pytest.raises(ValueError, match="base_delay"):
        WorkQueue(base_delay=0)
    with pytest.raises(ValueError, match="base_delay"):
        WorkQueue(base_delay=1.0, max_delay=0.5)


def test_concurrent_workers_never_share_a_key_and_lose_none() -> None:
    """Real threads: no key is held by two workers at once; every add is processed after it."""
    q = WorkQueue()
    keys = [f"ns/k{i}" for i in range(8)]
    held: Counter[str] = Counter()
    last_added: dict[str, int] = {}
    last_started: dict[str, int] = {}
    ticket = iter(range(10**9))
    lock = threading.Lock()
    violations: list[str] = []

    def worker() -> None:
        while (key := q.get(timeout=0.5)) is not None:
            with lock:
                held[key] += 1
                if held[key] > 1:
                    violations.append(key)
                last_started[key] = next(ticket)
            time.sleep(random.random() / 1000)  # noqa: S311
            with lock:
                held[key] -= 1
            q.done(key)

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for t in workers:
        t.start()
    rng = random.Random(7)  # noqa: S311
    for i in range(2000):
        key = rng.choice(keys)
        with lock:
            last_added[key] = next(ticket)
        q.add(key)
        if i % 20 == 0:
            time.sleep(0.001)
    for t in workers:
        t.join(timeout=10)
    assert violations == []
    for key, added in last_added.items():
        assert last_started[key] > added, f"{key} was added after its last processing began"


class QueueMachine(RuleBasedStateMachine):
    """Random interleavings of add, add_after, clock steps, get and done by 3 workers."""

    KEYS = st.sampled_from(["a/1", "a/2", "b/1", "b/2"])
    WORKERS = st.integers(min_value=0, max_value=2)

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.q = WorkQueue(clock=self.clock)
        self.pending: set[str] = set()  # must be handed out (again) in the future
        self.delayed: dict[str, float] = {}  # key -> earliest ready time
        self.held: dict[int, str] = {}  # worker -> key it is processing

    def _promote(self) -> None:
        for key, ready in list(self.delayed.items()):
            if ready <= self.clock.monotonic():
                del self.delayed[key]
                self.pending.add(key)

    @rule(key=KEYS)
    def add(self, key: str) -> None:
        self.q.add(key)
        self.pending.add(key)

    @rule(key=KEYS, delay=st.sampled_from([0.5, 1.0, 2.0]))
    def add_after(self, key: str, delay: float) -> None:
        self.q.add_after(key, delay)
        ready = self.clock.monotonic() + delay
        self.delayed[key] = min(ready, self.delayed.get(key, ready))

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._promote()

    @rule(worker=WORKERS)
    def get(self, worker: int) -> None:
        if worker in self.held:
            return
        key = self.q.get(timeout=0)
        busy = set(self.held.values())
        if key is None:
            assert self.pending <= busy, f"ready keys lost: {self.pending - busy}"
            return
        assert key not in busy, f"{key} handed to two workers at once"
        assert key in self.pending, f"{key} handed out but never (re)added"
        self.pending.discard(key)
        self.held[worker] = key

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(sorted(self.held)))
        self.q.done(self.held.pop(worker))

    @invariant()
    def depth_counts_ready_keys_not_being_processed(self) -> None:
        assert len(self.q) == len(self.pending - set(self.held.values()))

    def teardown(self) -> None:
        for key in self.held.values():
            self.q.done(key)
        self.clock.advance(10.0)
        self._promote()
        out = drain(self.q)
        assert sorted(out) == sorted(self.pending), "every pending key comes out exactly once"


QueueMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_queue_state_machine = QueueMachine.TestCase
test_queue_state_machine.__doc__ = "No key goes to two workers at once and no added key is lost."
