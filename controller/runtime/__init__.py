"""The long-running controller: watches, cache, work queue, workers, reconciler, health."""
