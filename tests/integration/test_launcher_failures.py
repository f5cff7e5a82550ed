"""The launcher fails fast and says why: a crashing component, a component that never
becomes ready, a port taken by someone else, a component that dies later. No hang, no
orphan."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from localcluster import (
    Component,
    ComponentError,
    LocalCluster,
    ensure_binaries,
    free_port,
    wait_until,
)


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


@pytest.mark.integration
def test_a_taken_port_is_avoided_a_crash_is_reported_and_stop_leaves_nothing() -> None:
    """The cluster starts although its first port is taken (it retries on fresh ports),
    reports a component that dies later with that component's log, and stop() leaves no
    process and no directory behind."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    handed: list[int] = []

    def ports() -> int:
        port = taken.getsockname()[1] if not handed else free_port()
        handed.append(port)
        return int(port)

    cluster = LocalCluster(ensure_binaries(), port_allocator=ports)
    try:
        started = time.monotonic()
        cluster.start()
        print(f"started in {time.monotonic() - started:.1f}s despite a taken port")
        assert handed.count(taken.getsockname()[1]) == 1  # etcd's first port, then fresh ones
        pids = {name: comp.pid for name, comp in cluster.components.items()}
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        cluster.check()
        cluster.component("kube-scheduler").signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while cluster.component("kube-scheduler").alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ComponentError) as err:
            cluster.check()
        assert "kube-scheduler exited with code -9" in str(err.value)
        assert "kube-scheduler.log" in str(err.value)
    finally:
        cluster.stop()
        taken.close()
    for pid in pids.values():
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: not even a zombie is left
    assert not cluster.workdir.exists()
