"""The test demo's load outlives its bounded load runs: the supervisor starts a new run
whenever one ends, and reports a run that fails instead of letting the demo go quiet."""

from __future__ import annotations

import time

import pytest

from tests.support.demo import LoadSupervisor, start_app

pytestmark = pytest.mark.integration


def test_load_continues_past_many_bounded_runs() -> None:
    """With 1 s runs, requests keep arriving 6 s later, after several restarts."""
    app = start_app("supervised", "v1")
    load = LoadSupervisor([f"{app.url}/"], rps=20, seconds=1.0)
    try:
        load.start()
        time.sleep(6)
        load.check()
        before = app.requests_served()
        time.sleep(1.5)
        assert app.requests_served() > before
        assert load.runs >= 4
    finally:
        load.stop()
        app.proc.kill()
        app.proc.wait()


def test_a_failed_load_run_fails_the_check() -> None:
    """A load run that exits non-zero is named by check(), never restarted in silence."""
    load = LoadSupervisor(["http://example.invalid/"], rps=5, seconds=1.0)
    try:
        load.start()
        deadline = time.monotonic() + 15
        while load.failure is None and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(pytest.fail.Exception, match="exited with code 2"):
            load.check()
    finally:
        load.stop()
