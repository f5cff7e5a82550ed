"""``make demo``: the whole Stepwise loop on a local cluster, with a readable timeline."""
