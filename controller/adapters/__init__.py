"""Thin I/O adapters (Kubernetes, Prometheus, traffic routers): they act, they never decide."""
