"""The launcher fails fast and says why: a crashing component, a component that never
becomes ready. No hang, no orphan."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from localcluster import Component, ComponentError, wait_until


def test_a_crashing_component_fails_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    """A component that exits makes wait_until raise at once, quoting its last log lines."""
    comp = Component(
        "broken",
        ["sh", "-c", "echo 'bind: address already in use' >&2; exit 3"],
        tmp_path / "b.log",
    )
    comp.start()
    start = time.monotonic()
    with pytest.raises(ComponentError) as err:
        wait_until("broken", lambda: False, [comp], timeout=60)
    assert time.monotonic() - start < 5
    assert "broken exited with code 3" in str(err.value)
    assert "address already in use" in str(err.value)


def test_a_component_that_never_gets_ready_times_out_with_its_log(tmp_path: Path) -> None:
    """A live component that never becomes ready fails after the timeout, with its log."""
    comp = Component("slow", ["sh", "-c", "echo waiting-for-godot; sleep 60"], tmp_path / "s.log")
    comp.start()
    try:
        with pytest.raises(ComponentError) as err:
            wait_until("slow", lambda: False, [comp], timeout=1.0)
        assert "slow not ready after 1s" in str(err.value)
        assert "waiting-for-godot" in str(err.value)
    finally:
        comp.stop(grace=2)
    assert not comp.alive()


def test_stop_kills_a_component_that_ignores_sigterm(tmp_path: Path) -> None:
    """stop() escalates to SIGKILL after the grace period and reaps the process group."""
    comp = Component("stubborn", ["sh", "-c", "trap '' TERM; sleep 60 & wait"], tmp_path / "x.log")
    comp.start()
    pid = comp.pid
    assert pid is not None
    time.sleep(0.2)
    comp.stop(grace=0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
