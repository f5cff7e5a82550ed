"""One demo-app process, managed like the control plane's (hack/localcluster/process.py):
output appended to a log file, its own process group, SIGKILL when the thread that
started it dies, SIGTERM then SIGKILL to stop, and its log tail to explain an exit.

The runner starts each child from the thread that supervises it and stops it before that
thread ends, so the parent-death signal (which Linux ties to the starting thread) only
fires when the runner itself dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Resolved in the parent: the child runs only this call between fork and exec (no
# dlopen there, which could wait for a lock another thread held at fork time).
_prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """A process started with an environment of its own; not shared between threads."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Start the process, its output appended to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, no locks
                start_new_session=True,
            )

    def exit_code(self) -> int | None:
        """The exit code once the process has ended (a signal is negative), else None."""
        return self._proc.poll() if self._proc else None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the process group, up to ``grace`` seconds, then SIGKILL; reaps."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def tail(self, lines: int = 15) -> str:
        """The last lines of the log."""
        try:
            data = self.log_path.read_bytes()[-8192:]
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def _signal(self, sig: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)
