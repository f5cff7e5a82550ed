"""Work a test keeps running in a daemon thread for the length of a ``with`` block."""

from __future__ import annotations

import threading
from typing import Self


class Background:
    """Runs :meth:`_run` in a daemon thread from entering the ``with`` block; leaving it
    sets ``_stop`` (which ``_run`` watches), calls :meth:`_stopping`, and waits up to
    ``join_timeout`` seconds for the thread to end."""

    join_timeout = 5.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def _stopping(self) -> None:
        """What else ends the work, once ``_stop`` is set (nothing by default)."""

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._stopping()
        self._thread.join(timeout=self.join_timeout)
