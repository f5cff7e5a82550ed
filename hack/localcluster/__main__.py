"""``python -m localcluster up|down|status``: the local cluster for people (``make cluster-up``).

``up`` starts a detached supervisor that owns the processes and prints where to find
them; ``down`` asks it to stop them all and waits until it has. State lives in
``$STEPWISE_CACHE/run`` (default ``~/.cache/stepwise/run``), never in the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from localcluster.cluster import LocalCluster, ensure_binaries
from localcluster.process import ComponentError
from localcluster.prometheus import LocalPrometheus


def _state_dir() -> Path:
    root = os.environ.get("STEPWISE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stepwise"
    )
    return Path(root) / "run"


def _read_state(state: Path) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads((state / "state.json").read_text())
    except FileNotFoundError:
        return None
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def serve(state: Path) -> int:
    """Run the cluster and Prometheus in the foreground until SIGTERM or SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bin_dir = ensure_binaries()
    # Every node here is fake: no taint, so manifests schedule as they are written.
    cluster = LocalCluster(bin_dir, workdir=state / "cluster", taint=False)
    prom = LocalPrometheus(workdir=state / "prometheus")
    try:
        endpoints = cluster.start()
        prom.start()
        (state / "state.json").write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "kubeconfig": str(endpoints.kubeconfig),
                    "server": endpoints.server,
                    "prometheus": prom.url,
                }
            )
        )
        while not stop.wait(1.0):
            for comp in [*cluster.components.values(), prom.component]:
                if comp is not None:
                    comp.check()
    except ComponentError as exc:
        print(f"localcluster: {exc}", file=sys.stderr)
        return 1
    finally:
        prom.stop()
        cluster.stop()
        (state / "state.json").unlink(missing_ok=True)
        for sub in ("cluster", "prometheus"):
            shutil.rmtree(state / sub, ignore_errors=True)
    return 0


def up(state: Path, timeout: float) -> int:
    """Start a detached supervisor and wait until the cluster is ready."""
    current = _read_state(state)
    if current and _alive(int(str(current["pid"]))):
        print(f"already running\nKUBECONFIG={current['kubeconfig']}")
        return 0
    state.mkdir(parents=True, exist_ok=True)
    # Build in the foreground so that its progress and errors reach the terminal.
    ensure_binaries()
    log = (state / "supervisor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "localcluster", "serve", "--state", str(state)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _read_state(state)
        if current:
            print(
                f"cluster ready\nKUBECONFIG={current['kubeconfig']}\n"
                f"PROMETHEUS={current['prometheus']}\n"
                f"export KUBECONFIG={current['kubeconfig']}"
            )
            return 0
        if proc.poll() is not None:
            print((state / "supervisor.log").read_text()[-4000:], file=sys.stderr)
            print("localcluster: the cluster failed to start (log above)", file=sys.stderr)
            return 1
        time.sleep(0.2)
    proc.terminate()
    print(f"localcluster: not ready after {timeout:.0f}s; see {state}", file=sys.stderr)
    return 1


def down(state: Path) -> int:
    """Stop a cluster started with ``up``."""
    current = _read_state(state)
    if not current:
        print("no local cluster is running")
        return 0
    pid = int(str(current["pid"]))
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    (state / "state.json").unlink(missing_ok=True)
    print("cluster stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m localcluster``."""
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "serve"])
    parser.add_argument("--state", type=Path, default=_state_dir())
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.state)
    if args.command == "up":
        return up(args.state, args.timeout)
    if args.command == "down":
        return down(args.state)
    current = _read_state(args.state)
    print(json.dumps(current, indent=2) if current else "no local cluster is running")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
