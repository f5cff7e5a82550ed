"""``python -m podrunner --kubeconfig PATH``: serve the cluster's opted-in pods with
demo-app processes until SIGTERM or Ctrl-C, then stop them all."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from podrunner.runner import PodRunner


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run until told to stop."""
    parser = argparse.ArgumentParser(
        prog="podrunner", description="Serve kwok's opted-in pods with demo-app processes."
    )
    parser.add_argument("--kubeconfig", type=Path, required=True, help="admin kubeconfig")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the processes' logs go (default: temp)"
    )
    parser.add_argument(
        "--no-endpoint-slices",
        action="store_true",
        help="do not publish EndpointSlices for the Services of served pods",
    )
    parser.add_argument("--verbose", action="store_true", help="log every watch event")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner = PodRunner(
        args.kubeconfig, workdir=args.workdir, publish_slices=not args.no_endpoint_slices
    )
    runner.start()
    logging.getLogger("podrunner").info("pod runner: watching pods; logs in %s", runner.workdir)
    try:
        while not done.wait(1.0):
            runner.check()
    finally:
        runner.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
