"""``python -m demodriver`` (``make demo``): start a local cluster, run the demo scenario
on the real data plane (Traefik, pods that serve, a Prometheus that discovers them),
print the timeline and the measured time from regression to rollback, and tear
everything down."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from demodriver import scenario
from localcluster import LocalCluster, ensure_binaries
from localcluster.traefik import ensure_traefik


def main() -> int:
    """Run the demo; exit 0 when the good release was promoted and the bad one rolled back."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="stepwise-demo-"))
    print("Stepwise demo: building or reusing the local control plane ...", flush=True)
    bin_dir = ensure_binaries()
    ensure_traefik()
    with LocalCluster(bin_dir) as cluster:
        print(f"cluster up ({cluster.endpoints.server}); logs in {workdir}", flush=True)
        result = scenario.run(cluster.endpoints, workdir, say=lambda s: print(s, flush=True))
    for line in scenario.summary(result):
        print(line)
    print(f"  demo took {time.monotonic() - started:.0f}s")
    ok = result.good_promoted and result.bad_rolled_back
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
