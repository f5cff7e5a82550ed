"""Child processes of the local cluster: start with a log file, die with their parent,
stop gracefully then forcefully, and report a crash with the last lines of their log.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Self

_PR_SET_PDEATHSIG = 1


class Running:
    """A context manager over ``start()`` and ``stop()``: ``with Thing(...) as thing``
    starts it, and stops it on the way out, whatever happened."""

    def start(self) -> object:
        """Start; subclasses do the work."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop; subclasses do the work."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ComponentError(RuntimeError):
    """A component exited, or did not become ready in time; carries its last log lines."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Component:
    """One control-plane process (etcd, kube-apiserver, ...)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running process id, if started."""
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Start the process; its output is appended to its log file.

        The child gets SIGKILL when the process that started it dies, so a killed test
        run leaves no orphan behind.
        """
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
                start_new_session=True,
            )
        finally:
            log.close()

    def alive(self) -> bool:
        """True while the process runs."""
        return self._proc is not None and self._proc.poll() is None

    def check(self) -> None:
        """Raise :class:`ComponentError` with the log tail if the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise ComponentError(
                f"{self.name} exited with code {self._proc.returncode}; last log lines "
                f"({self.log_path}):\n{self.tail()}"
            )

    def tail(self, lines: int = 25) -> str:
        """The last lines of the log file."""
        try:
            data = self.log_path.read_bytes()[-16384:]
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        """Send a signal to the process group (the process and anything it started)."""
        if self.alive() and self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps the process."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self._proc.wait(timeout=10)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL at once (to simulate a crash) and reap."""
        if self._proc is not None:
            self.signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
            self._proc = None


def wait_until(
    what: str,
    ready: Callable[[], bool],
    watch: Iterable[Component],
    timeout: float,
    interval: float = 0.1,
) -> None:
    """Poll ``ready`` until it is true; fail at once if a watched component exits,
    and with the components' log tails when ``timeout`` passes.
    """
    watched = list(watch)
    deadline = time.monotonic() + timeout
    while True:
        for comp in watched:
            comp.check()
        try:
            if ready():
                return
        except Exception:  # noqa: S110 - not ready yet; any error means "try again"
            pass
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {c.name} ({c.log_path}):\n{c.tail(15)}" for c in watched)
            raise ComponentError(f"{what} not ready after {timeout:.0f}s\n{tails}")
        time.sleep(interval)
