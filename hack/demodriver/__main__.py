"""``python -m demodriver`` (``make demo``): start a local cluster and Prometheus, run the
demo scenario, print the timeline and the measured time from regression to rollback,
and tear everything down."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from demodriver import scenario
from localcluster import LocalCluster, LocalPrometheus, ensure_binaries


def main() -> int:
    """Run the demo; exit 0 when the good release was promoted and the bad one rolled back."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="stepwise-demo-"))
    print("Stepwise demo: building or reusing the local control plane ...", flush=True)
    bin_dir = ensure_binaries()
    with LocalCluster(bin_dir) as cluster, LocalPrometheus(scrape_interval="1s") as prometheus:
        print(
            f"cluster up ({cluster.endpoints.server}), Prometheus at {prometheus.url}; "
            f"logs in {workdir}",
            flush=True,
        )
        result = scenario.run(
            cluster.endpoints.kubeconfig, prometheus, workdir, say=lambda s: print(s, flush=True)
        )
    for line in scenario.summary(result):
        print(line)
    print(f"  demo took {time.monotonic() - started:.0f}s")
    ok = result.good_promoted and result.bad_rolled_back
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
