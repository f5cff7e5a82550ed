"""Stepwise: a progressive-delivery canary controller for Kubernetes.

The package is layered (see ``shared/GUIDE.md`` and the import-linter contracts in
``pyproject.toml``): ``api`` holds the resource models, ``core`` the pure decisions,
``adapters`` thin I/O, ``runtime`` the long-running loop, and ``cli`` the command.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stepwise")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
