"""``python -m demoapp --port 8080 --version v1 --error-rate 0.0 --latency-ms 20``:
serve the demo app until interrupted (see :mod:`demoapp.app`)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from demoapp.app import Config, DemoApp, make_server


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(prog="demoapp", description="Stepwise's demo service.")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--version", required=True, help="the version label, e.g. v1")
    parser.add_argument("--service", default="demo", help="the service label")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of 500s, 0..1")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="latency per request")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="± uniform latency jitter")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible errors")
    args = parser.parse_args(argv)
    try:
        config = Config().updated(
            {
                "errorRate": args.error_rate,
                "latencyMs": args.latency_ms,
                "jitterMs": args.jitter_ms,
            }
        )
    except ValueError as exc:
        parser.error(str(exc))
    app = DemoApp(service=args.service, version=args.version, config=config, seed=args.seed)
    server = make_server(app, args.host, args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(
        f"demoapp {args.service}/{args.version} on http://{args.host}:{server.server_port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
